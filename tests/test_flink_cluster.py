"""Featurize and tag on a local Flink session cluster of two TaskManagers (`cattag flink-cluster start
--taskmanagers 2`) against DirectRunner.

tests/test_flink.py runs Flink embedded in the job server (`--flink_master [local]`); here the job server
submits over REST to a separate JobManager process, which deploys the tasks on two TaskManager processes,
each starting its own SDK workers (cattag-sdk-worker, Beam's PROCESS environment, the default on a cluster):
the shape of a real cluster. The cluster runs from the jars that `make flink-job-server` caches
(runners/flink_cluster.py), in a temporary work directory, on a free port.
"""

from __future__ import annotations

import json
import os
import pathlib
import socket
import tempfile
import time
import urllib.request

import numpy as np
import pytest

from pipelines import featurize, tag
from runners import flink_cluster, sockets
from tests.test_flink import flink_jar, flink_version  # noqa: F401 (fixture)
from tests.test_runners import (  # noqa: F401 (fixtures)
    assert_same_features,
    assert_same_tag_rows,
    catalogue,
    direct_features,
    direct_tags,
    featurize_outputs,
    tag_outputs,
)
from tests.test_listening import Sampler


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive(pid: int) -> bool:
    try:
        return pathlib.Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] not in "ZX"
    except OSError:
        return False


@pytest.fixture(scope="module")
def cluster(flink_jar, tmp_path_factory):  # noqa: F811
    workdir = tmp_path_factory.mktemp("flink-cluster")
    began = time.monotonic()
    info = flink_cluster.start(workdir, jar=flink_jar, taskmanagers=2, slots=1, rest_port=_free_port())
    info["startup_wall_s"] = time.monotonic() - began
    pids = info["pids"]
    assert len(pids) == 4 and all(_alive(pid) for pid in pids)  # JobManager, 2 TaskManagers, the job server
    try:
        yield info
    finally:
        stopped = flink_cluster.stop(workdir)
        assert sorted(stopped["stopped"]) == sorted(pids)
        assert not any(_alive(pid) for pid in pids), "Flink processes left running after stop"
        assert not flink_cluster.status(workdir)["running"]


def _jobs(port: int) -> list[dict]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/jobs/overview", timeout=5) as reply:
        return json.loads(reply.read())["jobs"]


def test_status_reports_the_taskmanagers_and_slots(cluster):
    info = flink_cluster.status(cluster["workdir"])
    assert info["running"] and info["pids"] == cluster["pids"]
    assert (info["taskmanagers"], info["slots_total"]) == (2, 2)
    assert flink_cluster.slots_per_taskmanager(info["flink_master"]) == 1
    assert info["flink_version"].startswith(flink_version())
    assert info["flink_master"] == f"localhost:{cluster['rest_port']}"
    # Everything on loopback, temp files and logs under the work directory.
    config = (pathlib.Path(cluster["workdir"]) / "conf" / "config.yaml").read_text()
    for key in ("rest.address", "rest.bind-address", "jobmanager.rpc.address", "jobmanager.bind-host",
                "taskmanager.host", "taskmanager.bind-host"):
        assert f'{key}: "127.0.0.1"' in config
    assert not sockets.exposed(set().union(*(sockets.descendants(pid) for pid in cluster["pids"])))
    # Its own job server, named in its configuration with the class path news: jobs go through it, with no jars.
    assert flink_cluster.cattag_settings(info["flink_master"]) == {
        flink_cluster.JOB_ENDPOINT_KEY: info["job_endpoint"], flink_cluster.BEAM_ON_CLASS_PATH_KEY: "true"}
    assert sockets.listeners({cluster["pids"][3]})  # the job server listens (on loopback: the check above)
    assert (pathlib.Path(cluster["workdir"]) / "log" / "taskmanager-0.log").stat().st_size > 0


def test_a_second_cluster_on_the_same_port_is_a_one_line_error(cluster, flink_jar, tmp_path):  # noqa: F811
    with pytest.raises(ValueError, match=f"port {cluster['rest_port']} ") as err:
        flink_cluster.start(tmp_path / "second", jar=flink_jar, rest_port=cluster["rest_port"])
    assert "\n" not in str(err.value)
    assert not (tmp_path / "second" / "cluster.json").exists()  # nothing started
    with pytest.raises(ValueError, match="already running"):  # nor twice from one work directory
        flink_cluster.start(cluster["workdir"], jar=flink_jar, rest_port=_free_port())


def test_featurize_on_two_taskmanagers_writes_the_same_examples(cluster, flink_jar, catalogue,  # noqa: F811
                                                                direct_features, tmp_path, monkeypatch):
    jvm_tmp = tmp_path / "jvm-tmp"
    jvm_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(jvm_tmp))  # Beam's staged artifacts
    port = cluster["rest_port"]
    before = _jobs(port)
    began = time.monotonic()
    sampler = Sampler(os.getpid(), also=cluster["pids"])
    try:
        featurize.run(["--input", str(catalogue), "--labels", "from-dirs", "--output", str(tmp_path / "features"),
                       "--progress", "off", "--runner", "FlinkRunner", "--flink_job_server_jar", flink_jar,
                       "--flink_version", flink_version(), "--flink_master", f"localhost:{port}", "--parallelism", "2",
                       f"--job_server_jvm_properties=-Djava.io.tmpdir={jvm_tmp}"])
    finally:
        seen = sampler.stop()
    print(f"featurize on the session cluster: {time.monotonic() - began:.1f} s "
          f"(cluster start-up {cluster['startup_wall_s']:.1f} s)")
    # The job ran on this cluster, not on a Flink embedded in the job server, with SDK workers started by
    # both TaskManagers; nothing the job or the cluster opened listens beyond loopback.
    jobs = [job for job in _jobs(port) if job not in before]
    assert [job["state"] for job in jobs] == ["FINISHED"], jobs
    assert not (jvm_tmp / "flink-web-upload").exists(), "an embedded Flink cluster ran"
    taskmanagers = cluster["pids"][1:3]
    assert all(any("cattag-sdk-worker" in command for command in sampler.below[pid]) for pid in taskmanagers), \
        sampler.below
    assert any(s.command.startswith("java") for s in seen)
    assert not [str(s) for s in seen if not s.loopback_only]
    # Through the cluster's own job server (no job server of the job's, no jars uploaded).
    assert "Invoking job" in (pathlib.Path(cluster["workdir"]) / "log" / "job-server.log").read_text()
    assert_same_features(tmp_path / "features", direct_features)


def test_the_cli_names_make_when_the_jar_is_missing(tmp_path, capsys):
    from pipelines import cli

    assert cli.main(["flink-cluster", "start", "--workdir", str(tmp_path), "--jar", str(tmp_path / "no.jar"),
                     "--port", str(_free_port())]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "make flink-job-server" in err
    assert os.listdir(tmp_path) == []


def test_tag_on_two_taskmanagers_writes_the_same_rows(cluster, flink_jar, catalogue, small_model,  # noqa: F811
                                                     direct_tags, tmp_path):
    """Also the cluster's second job: jobs after the first once failed there ("call is closed", "Direct buffer
    memory") until the TaskManagers got off-heap memory for Beam's gRPC channels."""
    port = cluster["rest_port"]
    before = _jobs(port)
    tag.run(["--input", str(catalogue), "--model", small_model[0], "--output", str(tmp_path / "tags"),
             "--progress", "off", "--runner", "FlinkRunner", "--flink_master", f"localhost:{port}",
             "--flink_job_server_jar", flink_jar, "--flink_version", flink_version(), "--parallelism", "2",
             f"--job_server_jvm_properties=-Djava.io.tmpdir={tmp_path}"])
    assert [job["state"] for job in _jobs(port) if job not in before] == ["FINISHED"]
    assert_same_tag_rows(tmp_path / "tags", direct_tags)


def test_a_killed_taskmanager_fails_the_job_and_the_same_command_then_completes(flink_jar, tmp_path):  # noqa: F811
    """Kill one of two TaskManagers while featurize runs: the command ends with a one-line error (no hang, no
    traceback), leaves no metadata.json, and once the cluster is back the same command writes the whole
    output, identical to DirectRunner's."""
    import subprocess
    import sys

    from tests.conftest import GTZAN

    workdir = tmp_path / "cluster"
    port = _free_port()
    flink_cluster.start(workdir, jar=flink_jar, taskmanagers=2, slots=1, rest_port=port)
    output = tmp_path / "features"
    command = [sys.executable, "-m", "pipelines.cli", "featurize", "--input", str(GTZAN / "manifest.csv"),
               "--output", str(output), "--progress", "off", "--runner", "FlinkRunner", "--flink_master",
               f"localhost:{port}", "--flink_job_server_jar", flink_jar, "--flink_version", flink_version(),
               "--parallelism", "2", f"--job_server_jvm_properties=-Djava.io.tmpdir={tmp_path}"]
    env = {**os.environ, "PYTHONPATH": str(pathlib.Path(__file__).resolve().parents[1])}
    try:
        job = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while not any(j["state"] == "RUNNING" for j in _jobs(port)):
            assert job.poll() is None and time.monotonic() < deadline, "the job never ran"
            time.sleep(0.5)
        time.sleep(2)  # into the decoding
        state = json.loads((workdir / "cluster.json").read_text())
        os.kill(state["taskmanagers"][0]["pid"], 9)
        _, stderr = job.communicate(timeout=240)  # fails, does not hang
        assert job.returncode != 0
        assert "error: the job failed on the runner" in stderr and "run the same command again" in stderr, stderr[-2000:]
        # Beam's in-process SDK worker threads may log their broken gRPC streams with tracebacks before
        # that; the command itself ends on the one line, not on an uncaught exception.
        assert "Traceback" not in stderr[stderr.index("error: the job failed on the runner"):]
        assert not (output / "metadata.json").exists()
    finally:
        flink_cluster.stop(workdir)

    flink_cluster.start(workdir, jar=flink_jar, taskmanagers=2, slots=1, rest_port=port)
    try:
        again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert again.returncode == 0, again.stderr[-2000:]
    finally:
        flink_cluster.stop(workdir)
    direct = tmp_path / "direct"
    featurize.run(["--input", str(GTZAN / "manifest.csv"), "--output", str(direct), "--progress", "off"])
    here, errors_here, bytes_here = featurize_outputs(output)
    there, errors_there, bytes_there = featurize_outputs(direct)
    assert here.keys() == there.keys() and len(here) == 600 and errors_here == errors_there
    assert bytes_here == bytes_there
    for key, (_, mel) in there.items():
        np.testing.assert_array_equal(here[key][1], mel)


def test_the_watch_on_the_cluster_survives_a_killed_taskmanager_and_a_restart(flink_jar, gtzan_dir,  # noqa: F811
                                                                              pretrained_cache, tmp_path):
    """`tag --watch` on a session cluster of two TaskManagers, with checkpoints: the TaskManager that runs the
    job is killed mid-watch, Flink restarts the job on the other one from its last checkpoint, and the files
    that arrive after come through; then a drained stop, and a second session that tags only what is new.
    Every (track, content) has one row."""
    import shutil
    import subprocess

    from schemas import tags
    from tests.test_watch import Watcher

    workdir, port = tmp_path / "cluster", _free_port()
    flink_cluster.start(workdir, jar=flink_jar, taskmanagers=2, slots=1, rest_port=port)
    folder, output, log = tmp_path / "incoming", tmp_path / "tags", tmp_path / "watch.log"
    folder.mkdir()
    db = f"duckdb:///{tmp_path / 'c.duckdb'}"
    flags = ("--runner", "FlinkRunner", "--flink_master", f"localhost:{port}", "--flink_job_server_jar", flink_jar,
             "--flink_version", flink_version(), "--parallelism", "1", "--checkpointing_interval", "2000",
             f"--job_server_jvm_properties=-Djava.io.tmpdir={tmp_path}")
    clips = sorted(gtzan_dir.glob("*/*.flac"))
    blues, rock, jazz, metal = (next(c for c in clips if c.parent.name == g) for g in ("blues", "rock", "jazz", "metal"))

    def tracks() -> set[str]:
        return {r["track_id"] for r in watcher.rows()}

    try:
        watcher = Watcher(folder, output, db, log, None, flags)
        try:
            shutil.copy(blues, folder / "blues.flac")
            shutil.copy(rock, folder / "rock.flac")
            watcher.wait_for(lambda: tracks() >= {"blues.flac", "rock.flac"}, "rows of the first two clips",
                             timeout_s=180)
            # The TaskManager whose SDK worker runs the job (parallelism 1: one of the two).
            state = json.loads((workdir / "cluster.json").read_text())
            busy = [tm["pid"] for tm in state["taskmanagers"]
                    if subprocess.run(["pgrep", "-P", str(tm["pid"])], capture_output=True).stdout.strip()]
            assert len(busy) == 1, state
            time.sleep(3)  # a checkpoint after those rows
            os.kill(busy[0], 9)
            shutil.copy(jazz, folder / "jazz.flac")
            watcher.wait_for(lambda: "jazz.flac" in tracks(), "the row of a file dropped after the kill",
                             timeout_s=240)
            assert any(job["state"] == "RUNNING" for job in _jobs(port))
            assert watcher.stop(timeout_s=150) == 0
        finally:
            if watcher.process.poll() is None:
                watcher.process.kill()
        text = log.read_text()
        assert "watch stopped (DONE)" in text, text[-3000:]
        assert "switched from state RUNNING to RESTARTING" in (workdir / "log" / "jobmanager.log").read_text()
        assert not [job for job in _jobs(port) if job["state"] not in ("FINISHED", "CANCELED")]  # none left running

        shutil.copy(metal, folder / "metal.flac")
        watcher = Watcher(folder, output, db, log, None, flags)
        try:
            watcher.wait_for(lambda: "metal.flac" in tracks(), "the new file's row after a restart", timeout_s=180)
            time.sleep(2)
            assert watcher.stop(timeout_s=150) == 0
        finally:
            if watcher.process.poll() is None:
                watcher.process.kill()
        assert not [job for job in _jobs(port) if job["state"] not in ("FINISHED", "CANCELED")]
    finally:
        flink_cluster.stop(workdir)
    text = log.read_text()
    assert text.count("watch stopped (DONE)") == 2, text[-3000:]
    rows = sorted((r["track_id"], r[tags.FINGERPRINT]) for r in watcher.rows())
    assert [track for track, _ in rows] == ["blues.flac", "jazz.flac", "metal.flac", "rock.flac"], rows
