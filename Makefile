# Two entry points for a fresh machine: `make demo` (the main job end to end) and `make test`.
# Each installs what it needs: a Python 3.11 virtual environment with pinned packages, and the
# Debian packages the tests use (ffmpeg, to make and decode m4a files).
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install system-deps demo test bench bench-train bench-accuracy bench-tag bench-non-music bench-db clean

$(STAMP): pyproject.toml constraints.txt setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# build and setuptools>=77 in the venv itself: Beam's --setup_file runs `python -m build
	# --no-isolation --sdist` with the launching interpreter to stage cattag onto workers.
	$(BIN)/python -m pip install -q -c constraints.txt setuptools build
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	touch $@

install: $(STAMP)

system-deps:
	@command -v ffmpeg >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends ffmpeg >/dev/null; }

demo: $(STAMP)
	$(BIN)/cattag demo

test: $(STAMP) system-deps
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python bench/featurize_bench.py

bench-train: $(STAMP)
	$(BIN)/python bench/train_bench.py

bench-accuracy: $(STAMP)
	$(BIN)/python bench/accuracy_cv.py

bench-tag: $(STAMP)
	$(BIN)/python bench/tag_bench.py

# After bench-accuracy: the default model of each fold tags the catalogue sample.
bench-non-music: $(STAMP)
	$(BIN)/python bench/non_music.py $(foreach k,0 1 2 3 4,--model /tmp/cattag-cv/model-resnet-fold$(k))

bench-db: $(STAMP)
	$(BIN)/python bench/db_bench.py

clean:
	rm -rf $(VENV) cattag-demo .pytest_cache
