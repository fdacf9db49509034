"""Featurize on Apache Flink (an embedded [local] cluster) against DirectRunner, output by output.

Beam 2.77's own Flink job-server jar is not on Maven Central, so `make flink-job-server` builds one from
runners/flink-job-server/pom.xml (Beam Java 2.62 job server, Flink 1.19; see its README): this module's
fixture runs it, which builds the jar once per machine (~1 min, ~210 MB of Maven downloads, cached in
~/.m2) and is a no-op afterwards. The test is what shows the SDK/job-server version skew is safe for
cattag's featurize job: same examples, splits, mel arrays and failed inputs as DirectRunner.
"""

from __future__ import annotations

import pathlib
import re
import subprocess
import tempfile
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from pipelines import featurize
from tests.test_runners import catalogue, direct_features, featurize_outputs  # noqa: F401 (fixtures)

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
    examples_here, errors_here = featurize_outputs(tmp_path / "features")
    examples_direct, errors_direct = direct_features
    assert len(examples_direct) == 6 * 3  # 6 clips of 10 s: three 3 s segments each
    assert examples_here.keys() == examples_direct.keys()  # same tracks, segments and splits
    for key, (label, mel) in examples_direct.items():
        assert examples_here[key][0] == label
        np.testing.assert_array_equal(examples_here[key][1], mel)
    assert errors_here == errors_direct and len(errors_direct) == 8
