# Two entry points for a fresh machine: `make demo` (the main job end to end) and `make test`.
# Each installs what it needs: a Python 3.11 virtual environment with pinned packages, and what the
# tests use: ffmpeg (to make and decode m4a files), chromium (to render the report), Java 17 and Maven with the Flink job server they
# build (flink-job-server), and Go with the Prism runner it builds (prism). musicnn's weights are fetched by the demo and the tests themselves.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install system-deps pretrained demo test bench bench-train bench-accuracy bench-embeddings bench-tag bench-tag-pretrained bench-non-music bench-away bench-db flink-job-server prism bench-runners bench-watch bench-scale bench-load bench-scale-throughput clean

$(STAMP): pyproject.toml constraints.txt setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# build and setuptools>=77 in the venv itself: Beam's --setup_file runs `python -m build
	# --no-isolation --sdist` with the launching interpreter to stage cattag onto workers.
	$(BIN)/python -m pip install -q -c constraints.txt setuptools build
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	touch $@

install: $(STAMP)

# ffmpeg (m4a files for the audio tests, and the loudness reference), chromium with a font (the report test
# renders the page headless) and libchromaprint (the fingerprints of transforms/chromaprint.py).
system-deps:
	@{ command -v ffmpeg && command -v chromium && /sbin/ldconfig -p | grep -q libchromaprint.so.1; } >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends ffmpeg chromium fonts-liberation libchromaprint1 >/dev/null; }

# musicnn's weights, from its PyPI wheel (29 MB, once), converted into ~/.cache/cattag/pretrained.
pretrained: $(STAMP)
	$(BIN)/cattag pretrained fetch all

demo: $(STAMP)
	$(BIN)/cattag demo

test: $(STAMP) system-deps flink-job-server prism
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

# Home (GTZAN-dev CV) and away (dev-cross): accuracy, calibration, flags, and the review loop (about 50 minutes).
bench-away: pretrained
	$(BIN)/python bench/away_from_home.py

bench-db: $(STAMP)
	$(BIN)/python bench/db_bench.py

bench-runners: $(STAMP)
	$(BIN)/python bench/runners_bench.py

# Beam's Flink job server, for --runner FlinkRunner --flink_job_server_jar $(FLINK_JAR) --flink_version
# $(FLINK_VERSION): Beam 2.77's own job-server jar is not on Maven Central, so runners/flink-job-server/pom.xml
# builds a thin one (jar + lib/) from the newest Beam Java release that has it (see its README). Java 17
# and Maven installed first if missing; ~/.m2 caches the downloads. A no-op while the cached jar is newer
# than the pom. The versions live in the pom only; these lines read them.
FLINK_POM := runners/flink-job-server/pom.xml
FLINK_BEAM_VERSION := $(shell sed -n 's:.*<beam.version>\(.*\)</beam.version>.*:\1:p' $(FLINK_POM))
FLINK_VERSION := $(shell sed -n 's:.*<flink.version>\(.*\)</flink.version>.*:\1:p' $(FLINK_POM))
FLINK_CACHE ?= $(HOME)/.cache/cattag/flink/beam-$(FLINK_BEAM_VERSION)-flink-$(FLINK_VERSION)
FLINK_JAR_NAME := cattag-flink-job-server-$(FLINK_BEAM_VERSION)-flink$(FLINK_VERSION).jar
FLINK_JAR := $(FLINK_CACHE)/$(FLINK_JAR_NAME)
FLINK_TARGET := $(dir $(FLINK_POM))target

flink-job-server: $(FLINK_JAR)
	@echo "FLINK_JAR=$(FLINK_JAR)"

$(FLINK_JAR): $(FLINK_POM)
	@command -v java >/dev/null && command -v mvn >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends openjdk-17-jdk-headless maven >/dev/null; }
	# stdout to stderr: Maven 3.8 -q still writes colour resets there, and stdout is for FLINK_JAR=.
	mvn -q -B -f $(FLINK_POM) clean package >&2
	cd $(FLINK_TARGET) && sha256sum $(FLINK_JAR_NAME) lib/*.jar > SHA256SUMS
	mkdir -p $(FLINK_CACHE)
	rm -rf $(FLINK_CACHE)/lib $@
	cp -r $(FLINK_TARGET)/lib $(FLINK_TARGET)/SHA256SUMS $(FLINK_CACHE)/
	cp $(FLINK_TARGET)/$(FLINK_JAR_NAME) $@.tmp && mv $@.tmp $@
	cd $(FLINK_CACHE) && sha256sum --quiet -c SHA256SUMS

# Beam's Prism runner (cattag tag --watch's default), built with `go build` (its listener bound to loopback) at the installed Beam's
# version into ~/.cache/cattag/prism/vX.Y.Z/ (about 2 minutes, once); Go from Debian when missing.
prism: $(STAMP)
	@command -v go >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends golang-go >/dev/null; }
	$(BIN)/python -m runners.prism build

bench-watch: $(STAMP) prism
	$(BIN)/python bench/watch_bench.py

bench-scale: $(STAMP)
	$(BIN)/python bench/scale_bench.py

# cattag load and similar at 10^5 and 10^6 tag rows (about 35 minutes on 2 cores: the HNSW builds).
bench-load: $(STAMP)
	$(BIN)/python bench/load_bench.py --sizes 100000 1000000

# featurize and tag through 10^3 and 10^4 tracks on DirectRunner and a Flink session cluster.
bench-scale-throughput: $(STAMP) flink-job-server
	$(BIN)/python bench/scale_throughput.py --copies 17 167 --flink-jar $(FLINK_JAR)

clean:
	rm -rf $(VENV) cattag-demo .pytest_cache
