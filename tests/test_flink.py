"""Featurize on Apache Flink (an embedded [local] cluster) against DirectRunner, output by output.

Beam 2.77's own Flink job-server jar is not on Maven Central, so `make flink-job-server` builds one from
runners/flink-job-server/pom.xml (Beam Java 2.62 job server, Flink 1.19; see its README): this module's
fixture runs it, which builds the jar once per machine (~1 min, ~210 MB of Maven downloads, cached in
~/.m2) and is a no-op afterwards. The test is what shows the SDK/job-server version skew is safe for
cattag's featurize job: same examples, splits, mel arrays and failed inputs as DirectRunner.
"""

from __future__ import annotations

import json
import pathlib
import re
import subprocess
import tempfile
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from pipelines import featurize, tag
from schemas.featurize_metadata import METADATA_FILE
from tests.test_runners import (  # noqa: F401 (fixtures)
    assert_same_features,
    assert_same_tag_rows,
    catalogue,
    direct_features,
    direct_tags,
    featurize_outputs,
    tag_outputs,
    worker_pool,
)

REPO = pathlib.Path(__file__).resolve().parents[1]
POM = REPO / "runners" / "flink-job-server" / "pom.xml"


def flink_version() -> str:
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    return ET.parse(POM).getroot().find("m:properties/m:flink.version", ns).text


@pytest.fixture(scope="module")
def flink_jar() -> str:
    done = subprocess.run(["make", "-s", "flink-job-server"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    jar = re.search(r"FLINK_JAR=(\S+)", done.stdout).group(1)
    assert pathlib.Path(jar).is_file() and (pathlib.Path(jar).parent / "SHA256SUMS").is_file()
    return jar


# When Flink tears down the SDK harness after the job, the LOOPBACK worker's gRPC data-stream reader thread
# sometimes ends with "CANCELLED" (Beam's data_plane.read_grpc_client_inputs): teardown noise, not a failure.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_featurize_on_flink_writes_the_same_examples_in_the_same_splits(flink_jar, catalogue, direct_features,
                                                                        tmp_path, monkeypatch):
    # Flink's MiniCluster writes its blob store, RPC jar and state under the JVM's java.io.tmpdir (Java
    # ignores TMPDIR); Beam's Python side puts the staged artifacts under tempfile's directory.
    jvm_tmp = tmp_path / "jvm-tmp"
    jvm_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(jvm_tmp))
    featurize.run(["--input", str(catalogue), "--labels", "from-dirs", "--output", str(tmp_path / "features"),
                   "--progress", "off", "--runner", "FlinkRunner", "--flink_job_server_jar", flink_jar,
                   "--flink_version", flink_version(), "--flink_master", "[local]", "--environment_type", "LOOPBACK",
                   "--parallelism", "2", f"--job_server_jvm_properties=-Djava.io.tmpdir={jvm_tmp}"])
    # Flink's REST endpoint (started with the embedded cluster) made its upload directory in the JVM's tmpdir.
    assert (jvm_tmp / "flink-web-upload").is_dir(), "no embedded Flink cluster ran with this java.io.tmpdir"
    assert_same_features(tmp_path / "features", direct_features)


def flink_flags(jar: str, tmp_path: pathlib.Path) -> list[str]:
    jvm_tmp = tmp_path / "jvm-tmp"
    jvm_tmp.mkdir(exist_ok=True)
    return ["--runner", "FlinkRunner", "--flink_job_server_jar", jar, "--flink_version", flink_version(),
            "--flink_master", "[local]", "--parallelism", "2", f"--job_server_jvm_properties=-Djava.io.tmpdir={jvm_tmp}"]


@pytest.fixture(scope="module")
def direct_metadata(catalogue, tmp_path_factory):
    output = tmp_path_factory.mktemp("direct-stats") / "features"
    featurize.run(["--input", str(catalogue), "--labels", "from-dirs", "--output", str(output), "--progress", "off"])
    return json.loads((output / METADATA_FILE).read_text())


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_featurize_on_flink_with_a_worker_pool_writes_the_same_examples_and_statistics(
        flink_jar, catalogue, direct_features, direct_metadata, worker_pool, tmp_path):
    """EXTERNAL: SDK workers started by a Beam worker pool over gRPC, as beside a real TaskManager."""
    started = worker_pool.workers_started()
    featurize.run(["--input", str(catalogue), "--labels", "from-dirs", "--output", str(tmp_path / "features"),
                   "--progress", "off", *flink_flags(flink_jar, tmp_path), "--environment_type", "EXTERNAL",
                   "--environment_config", worker_pool.address])
    assert worker_pool.workers_started() > started
    assert_same_features(tmp_path / "features", direct_features)
    metadata = json.loads((tmp_path / "features" / METADATA_FILE).read_text())
    assert metadata["counts"] == direct_metadata["counts"] and metadata["totals"] == direct_metadata["totals"]
    for field in ("mean", "std"):
        np.testing.assert_allclose(metadata["mel_stats"][field], direct_metadata["mel_stats"][field], atol=1e-5)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_tag_on_flink_writes_the_same_rows(flink_jar, catalogue, small_model, direct_tags, tmp_path):
    tag.run(["--input", str(catalogue), "--model", small_model[0], "--output", str(tmp_path / "tags"),
             "--progress", "off", *flink_flags(flink_jar, tmp_path), "--environment_type", "LOOPBACK"])
    assert_same_tag_rows(tmp_path / "tags", direct_tags)


def test_a_job_server_jar_without_its_lib_is_a_one_line_error(flink_jar, tmp_path, capsys):
    import shutil

    import soundfile as sf

    from pipelines import cli

    moved = tmp_path / "server.jar"
    shutil.copy(flink_jar, moved)  # the thin jar alone, away from its lib/
    (tmp_path / "in").mkdir()
    sf.write(tmp_path / "in" / "a.wav", np.zeros(8000, np.float32), 8000)
    code = cli.main(["featurize", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--runner",
                     "FlinkRunner", "--flink_master", "[local]", "--flink_job_server_jar", str(moved)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "are missing" in err and "make flink-job-server" in err, err
    (tmp_path / "not.jar").write_text("hello")
    with pytest.raises(ValueError, match="not a job-server jar"):
        from apache_beam.options.pipeline_options import PipelineOptions

        from runners.pipeline import _check_flink

        _check_flink(PipelineOptions(["--runner", "FlinkRunner", "--flink_job_server_jar", str(tmp_path / "not.jar")]))
