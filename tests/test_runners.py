"""The same featurize and tag jobs on DirectRunner and on Beam's portable runner, compared output by output.

The portable runner is what Flink and Dataflow run underneath: the pipeline is translated to Beam's
portable representation, submitted to a job service, and executed by SDK workers that talk to it over
the Fn API. Here the job service is Beam's embedded one (`--job_endpoint embed`), with the SDK workers
in this process (LOOPBACK, cattag's default for a local job) or started by a Python worker pool over
gRPC (`--environment_type EXTERNAL`), the way Flink clusters run Python workers. Flink itself:
tests/test_flink.py (and test_flink_cluster.py), on a job server built by `make flink-job-server`.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipelines import featurize, tag
from schemas import examples
from schemas.descriptors import DESCRIPTOR_COLUMNS
from schemas.health import HEALTH_COLUMNS
from schemas.failure import ERRORS_DIR
from tests.conftest import GTZAN, make_bad_files
from tests.test_featurize_pipeline import read_records, read_split

REPO = pathlib.Path(__file__).resolve().parents[1]
PORTABLE = ["--runner", "PortableRunner", "--job_endpoint", "embed"]


class WorkerPool:
    def __init__(self, address: str, log: pathlib.Path):
        self.address, self.log = address, log

    def workers_started(self) -> int:
        return self.log.read_text().count("Starting worker")


@pytest.fixture(scope="module")
def worker_pool(tmp_path_factory):
    """A Beam Python worker pool on loopback: it starts an SDK worker process per request."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # The pool starts workers as `python ...`: this interpreter's, with cattag importable.
    env = {**os.environ, "PATH": f"{pathlib.Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(REPO)}
    log = tmp_path_factory.mktemp("worker-pool") / "pool.log"
    with open(log, "wb") as sink:
        pool = subprocess.Popen([sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main",
                                 f"--service_port={port}"], env=env, stdout=sink, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        assert pool.poll() is None, log.read_text()
        time.sleep(0.2)
    yield WorkerPool(f"localhost:{port}", log)
    pool.terminate()
    pool.wait(timeout=30)


RUNNERS = {
    "portable-loopback": lambda pool: PORTABLE,
    "portable-worker-pool": lambda pool: [*PORTABLE, "--environment_type", "EXTERNAL", "--environment_config", pool.address,
                                          "--direct_num_workers", "2"],
}


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory) -> pathlib.Path:
    """Real music in two genres (three clips each, cut to 10 s to keep the runs short) and broken files."""
    import soundfile as sf

    root = tmp_path_factory.mktemp("runners") / "catalogue"
    for genre in ("country", "disco"):
        (root / genre).mkdir(parents=True)
        for clip in sorted((GTZAN / genre).glob("*.flac"))[:3]:
            audio, sr = sf.read(clip)
            sf.write(root / genre / clip.name, audio[: 10 * sr], sr)
    make_bad_files(root / "broken")
    shutil.copy(GTZAN / "manifest.csv", root / "not-audio.txt")  # not listed: not an audio suffix
    return root


def featurize_outputs(output: pathlib.Path) -> tuple[dict, list, dict]:
    """(decoded examples by (split, track, segment), failed inputs, each split's serialized examples as sorted
    SHA-256 digests: the bytes, whatever order the shards hold them in)."""
    found, digests = {}, {}
    for split in examples.SPLITS:
        for example in read_split(output, split):
            found[(split, example[examples.TRACK_ID], example[examples.SEGMENT_INDEX])] = (
                example[examples.LABEL], example[examples.MEL])
        digests[split] = sorted(hashlib.sha256(record).hexdigest() for record in read_records(output, split))
    errors = sorted((pathlib.Path(r["uri"]).name, r["stage"], r["error"])
                    for r in pq.read_table(str(output / ERRORS_DIR)).to_pylist())
    return found, errors, digests


def assert_same_features(output: pathlib.Path, direct: tuple[dict, list, dict]) -> None:
    """The featurize output in `output` holds DirectRunner's examples (same tracks, segments, splits,
    labels and mel arrays, and byte for byte the same serialized examples) and failed inputs, for the
    runners tests' catalogue."""
    examples_here, errors_here, bytes_here = featurize_outputs(output)
    examples_direct, errors_direct, bytes_direct = direct
    assert len(examples_direct) == 6 * 3  # 6 clips of 10 s: three 3 s segments each
    assert examples_here.keys() == examples_direct.keys()  # same tracks, segments and splits
    for key, (label, mel) in examples_direct.items():
        assert examples_here[key][0] == label
        np.testing.assert_array_equal(examples_here[key][1], mel)
    assert bytes_here == bytes_direct  # deterministic serialization: comparable by hash across runners
    assert errors_here == errors_direct and len(errors_direct) == 8


@pytest.fixture(scope="module")
def direct_features(catalogue, tmp_path_factory):
    output = tmp_path_factory.mktemp("direct") / "features"
    featurize.run(["--input", str(catalogue), "--labels", "from-dirs", "--output", str(output), "--progress", "off"])
    return featurize_outputs(output)


def test_featurize_with_two_worker_processes_writes_byte_identical_examples(catalogue, direct_features, tmp_path):
    featurize.run(["--input", str(catalogue), "--labels", "from-dirs", "--output", str(tmp_path / "features"),
                   "--progress", "off", "--direct_num_workers", "2", "--direct_running_mode", "multi_processing"])
    assert_same_features(tmp_path / "features", direct_features)


@pytest.mark.parametrize("runner", list(RUNNERS))
def test_featurize_writes_the_same_examples_in_the_same_splits(runner, catalogue, direct_features, worker_pool,
                                                               tmp_path):
    started = worker_pool.workers_started()
    featurize.run(["--input", str(catalogue), "--labels", "from-dirs", "--output", str(tmp_path / "features"),
                   "--progress", "off", *RUNNERS[runner](worker_pool)])
    assert_same_features(tmp_path / "features", direct_features)
    assert (worker_pool.workers_started() > started) == (runner == "portable-worker-pool")


def tag_outputs(output: pathlib.Path) -> tuple[dict, list]:
    rows = {r["track_id"]: r for r in tag.read_tags(str(output)).to_pylist()}
    errors = sorted((pathlib.Path(r["uri"]).name, r["stage"], r["error"])
                    for r in pq.read_table(str(output / ERRORS_DIR)).to_pylist())
    return rows, errors


def assert_same_tag_rows(output: pathlib.Path, direct: tuple[dict, list]) -> None:
    """The tag output in `output` holds DirectRunner's rows (labels, flags and versions equal; scores and
    embeddings within 1e-5) and failed inputs, for the runners tests' catalogue: 6 clips and the silent file."""
    rows_here, errors_here = tag_outputs(output)
    rows_direct, errors_direct = direct
    assert rows_here.keys() == rows_direct.keys() and len(rows_direct) == 7
    for track_id, expected in rows_direct.items():
        got = rows_here[track_id]
        for column in ("genre", "uri", "n_segments", "low_confidence", "review_reason", "model_version"):
            assert got[column] == expected[column], (track_id, column)
        assert [t["label"] for t in got["tags"] or []] == [t["label"] for t in expected["tags"] or []]
        assert got["confidence"] == pytest.approx(expected["confidence"], abs=1e-5)
        np.testing.assert_allclose(got["embedding"], expected["embedding"], atol=1e-5)
        # Tempo, key and loudness: the same pure functions of the same decode on every runner.
        for column in (*DESCRIPTOR_COLUMNS, *HEALTH_COLUMNS):
            assert got[column] == expected[column], (track_id, column)
        assert (got["loudness_lufs"] is None) == (got["review_reason"] == "silent")
        np.testing.assert_allclose(got["probabilities"] or [], expected["probabilities"] or [], atol=1e-5)
    assert errors_here == errors_direct and len(errors_direct) == 7


@pytest.fixture(scope="module")
def direct_tags(catalogue, small_model, tmp_path_factory):
    output = tmp_path_factory.mktemp("direct") / "tags"
    tag.run(["--input", str(catalogue), "--model", small_model[0], "--output", str(output), "--progress", "off"])
    return tag_outputs(output)


@pytest.mark.parametrize("runner", list(RUNNERS))
def test_tag_writes_the_same_rows(runner, catalogue, small_model, direct_tags, worker_pool, tmp_path):
    started = worker_pool.workers_started()
    tag.run(["--input", str(catalogue), "--model", small_model[0], "--output", str(tmp_path / "tags"),
             "--progress", "off", *RUNNERS[runner](worker_pool)])
    assert_same_tag_rows(tmp_path / "tags", direct_tags)
    assert (worker_pool.workers_started() > started) == (runner == "portable-worker-pool")


@pytest.fixture(scope="module")
def direct_zero_shot(catalogue, pretrained_cache, tmp_path_factory):
    output = tmp_path_factory.mktemp("direct") / "zero-shot"
    tag.run(["--input", str(catalogue), "--model", "musicnn-msd", "--output", str(output), "--progress", "off"])
    return tag_outputs(output)


def test_the_pretrained_tagger_writes_the_same_rows_on_the_portable_runner(catalogue, direct_zero_shot, tmp_path):
    tag.run(["--input", str(catalogue), "--model", "musicnn-msd", "--output", str(tmp_path / "tags"),
             "--progress", "off", *PORTABLE])
    assert_same_tag_rows(tmp_path / "tags", direct_zero_shot)
