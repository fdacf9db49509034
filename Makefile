# Two entry points for a fresh machine: `make demo` (the main job end to end) and `make test`.
# Each installs what it needs: a Python 3.11 virtual environment with pinned packages, and the
# Debian packages the tests use (ffmpeg, to make and decode m4a files).
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install system-deps pretrained demo test bench bench-train bench-accuracy bench-embeddings bench-tag bench-tag-pretrained bench-non-music bench-db flink-job-server bench-runners clean

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

# musicnn's weights, from its PyPI wheel (29 MB, once), converted into ~/.cache/cattag/pretrained.
pretrained: $(STAMP)
	$(BIN)/cattag pretrained fetch all

demo: $(STAMP)
	$(BIN)/cattag demo

test: $(STAMP) system-deps
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python bench/featurize_bench.py

bench-train: $(STAMP)
	$(BIN)/python bench/train_bench.py

bench-accuracy: pretrained
	$(BIN)/python bench/accuracy_cv.py --models musicnn-msd,cnn2d,cnn1d

bench-embeddings: pretrained
	$(BIN)/python bench/embedding_layers.py --preset musicnn-msd
	$(BIN)/python bench/embedding_layers.py --preset musicnn-mtt

bench-tag: $(STAMP)
	$(BIN)/python bench/tag_bench.py

bench-tag-pretrained: pretrained
	$(BIN)/python bench/tag_bench.py --model musicnn-msd --copies 5 --small-copies 1 --workdir /tmp/cattag-tag-bench-musicnn

# After bench-accuracy: the default model of each fold tags the catalogue sample.
bench-non-music: $(STAMP)
	$(BIN)/python bench/non_music.py $(foreach k,0 1 2 3 4,--model /tmp/cattag-cv/model-musicnn-msd-fold$(k))

bench-db: $(STAMP)
	$(BIN)/python bench/db_bench.py

bench-runners: $(STAMP)
	$(BIN)/python bench/runners_bench.py

# Beam's Flink job server, for --runner FlinkRunner --flink_job_server_jar $(FLINK_JAR): fetched once
# from Maven Central into a cache directory; Java 17 and Maven installed first if missing.
FLINK_VERSION ?= 1.20
BEAM_VERSION := 2.77.0
FLINK_CACHE ?= $(HOME)/.cache/cattag/flink
FLINK_ARTIFACT := beam-runners-flink-$(FLINK_VERSION)-job-server
FLINK_JAR := $(FLINK_CACHE)/$(FLINK_ARTIFACT)-$(BEAM_VERSION).jar

flink-job-server: $(FLINK_JAR)

$(FLINK_JAR):
	@command -v java >/dev/null && command -v mvn >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends openjdk-17-jre-headless maven >/dev/null; }
	mkdir -p $(FLINK_CACHE)
	mvn -q -U dependency:copy -Dartifact=org.apache.beam:$(FLINK_ARTIFACT):$(BEAM_VERSION) -DoutputDirectory=$(FLINK_CACHE) \
	  || { echo "flink-job-server: Maven Central did not give org.apache.beam:$(FLINK_ARTIFACT):$(BEAM_VERSION); see README, Running at scale" >&2; exit 1; }
	@echo "Flink job server: $@"

clean:
	rm -rf $(VENV) cattag-demo .pytest_cache
