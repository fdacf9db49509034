"""Nothing cattag starts listens beyond this machine: every TCP listener of a cattag command, and of every
process it started (job server, Flink, Prism, SDK workers), is bound to loopback.

Each job runs as a user runs it, a `cattag` process; while it runs, the listening sockets of its whole process
tree (runners/sockets.py reads them from /proc, as `ss -ltnp` does) are sampled every 0.2 s. A job whose tree
never listened at all would pass vacuously, so each test also requires the listeners it expects to see.
"""

from __future__ import annotations

import http.server
import os
import pathlib
import shutil
import subprocess
import sys
import threading
import time

import pytest

from runners import sockets
from runners.loopback import bind_to_loopback, loopback_address
from tests.conftest import GTZAN
from tests.test_flink import flink_jar, flink_version  # noqa: F401 (fixture)
from tests.test_watch import Watcher, prism_binary  # noqa: F401 (fixture)

REPO = pathlib.Path(__file__).resolve().parents[1]


class Sampler:
    """Every listener of `root`'s process tree (and of `also`'s), sampled in a thread until stop()."""

    def __init__(self, root: int, also=()):
        self.root, self.also, self.seen = root, tuple(also), set()
        self.below = {pid: set() for pid in self.also}  # the commands seen running under each of `also`
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.is_set():
            pids = sockets.descendants(self.root)
            for other in self.also:
                under = sockets.descendants(other)
                self.below[other] |= {sockets.command_of(pid) for pid in under - {other}}
                pids |= under
            self.seen.update(sockets.listeners(pids))
            time.sleep(0.2)

    def stop(self) -> set[sockets.Listener]:
        self._done.set()
        self._thread.join()
        return self.seen


def _clips(folder: pathlib.Path, count: int) -> pathlib.Path:
    folder.mkdir(parents=True)
    for clip in sorted(GTZAN.glob("*/*.flac"))[:count]:
        shutil.copy(clip, folder / clip.name)
    return folder


def _cattag(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "pipelines.cli", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _run_sampled(*args: str, timeout: float = 300) -> tuple[set, str]:
    job = _cattag(*args)
    sampler = Sampler(job.pid)
    try:
        out, _ = job.communicate(timeout=timeout)
    finally:
        seen = sampler.stop()
        if job.poll() is None:
            job.kill()
    assert job.returncode == 0, out[-3000:]
    return seen, out


# ------------------------------------------------------------------------------------------- the reader itself


def test_the_reader_tells_a_wildcard_listener_from_a_loopback_one():
    servers = [http.server.HTTPServer((host, 0), http.server.BaseHTTPRequestHandler) for host in ("0.0.0.0", "127.0.0.1")]
    try:
        found = {listener.port: listener for listener in sockets.listeners({os.getpid()})}
        wild, local = (found[server.server_address[1]] for server in servers)
        assert (wild.address, wild.loopback_only) == ("0.0.0.0", False)
        assert (local.address, local.loopback_only) == ("127.0.0.1", True)
        assert sockets.exposed({os.getpid()}) == [wild]
        assert str(wild).endswith(f"on 0.0.0.0:{wild.port}")
    finally:
        for server in servers:
            server.server_close()
    assert sockets.Listener(1, "x", "::ffff:127.0.0.1", 1).loopback_only
    assert sockets.Listener(1, "x", "::1", 1).loopback_only
    assert not sockets.Listener(1, "x", "::", 1).loopback_only


def test_grpc_servers_asking_for_every_interface_get_loopback():
    import concurrent.futures

    import grpc

    assert loopback_address("[::]:0") == "localhost:0" and loopback_address("0.0.0.0:50000") == "localhost:50000"
    assert loopback_address("10.1.2.3:5") == "10.1.2.3:5"  # a named address is the user's choice
    bind_to_loopback()
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(1))
    port = server.add_insecure_port("[::]:0")  # what Beam's worker pool asks for
    server.start()
    try:
        mine = [listener for listener in sockets.listeners({os.getpid()}) if listener.port == port]
        assert mine and all(listener.loopback_only for listener in mine), mine
    finally:
        server.stop(0)


# ---------------------------------------------------------------------------------------------------- the jobs


def test_a_direct_runner_job_with_worker_processes_listens_on_loopback_only(tmp_path):
    """The FnApiRunner's control, data, state and logging servers for its worker processes ('[::]:0' in Beam)."""
    clips = _clips(tmp_path / "music", 4)
    seen, _ = _run_sampled("featurize", "--input", str(clips), "--output", str(tmp_path / "out"), "--progress", "off",
                           "--direct_num_workers", "2", "--direct_running_mode", "multi_processing")
    assert seen, "no listener seen: the sampler missed the job"
    assert not [str(s) for s in seen if not s.loopback_only]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_flink_job_listens_on_loopback_only(flink_jar, tmp_path):  # noqa: F811
    """Flink embedded in the job server cattag starts: job, artifact ports, Flink's blob server and shuffle,
    the TaskManager's Fn API servers, the LOOPBACK worker pool."""
    clips = _clips(tmp_path / "music", 4)
    seen, _ = _run_sampled("featurize", "--input", str(clips), "--output", str(tmp_path / "out"), "--progress", "off",
                           "--runner", "FlinkRunner", "--flink_master", "[local]", "--flink_job_server_jar", flink_jar,
                           "--flink_version", flink_version(), "--parallelism", "2",
                           f"--job_server_jvm_properties=-Djava.io.tmpdir={tmp_path}")
    java = [s for s in seen if s.command.startswith("java")]
    python = [s for s in seen if s.command.startswith("python")]
    assert len(java) >= 3 and python, sorted(map(str, seen))  # job + artifact + Fn API; the worker pool
    assert not [str(s) for s in seen if not s.loopback_only]


def test_opening_the_job_server_wider_is_the_users_choice_and_says_so(flink_jar, tmp_path):  # noqa: F811
    clips = _clips(tmp_path / "music", 1)
    seen, out = _run_sampled("featurize", "--input", str(clips), "--output", str(tmp_path / "out"), "--progress",
                             "off", "--runner", "FlinkRunner", "--flink_master", "[local]", "--flink_job_server_jar",
                             flink_jar, "--flink_version", flink_version(), "--flink_job_server_host", "0.0.0.0",
                             f"--job_server_jvm_properties=-Djava.io.tmpdir={tmp_path}")
    assert "the Flink job server listens on 0.0.0.0" in out
    exposed = [s for s in seen if not s.loopback_only]
    assert exposed and all(s.command.startswith("java") for s in exposed), sorted(map(str, seen))


def test_the_watch_on_prism_listens_on_loopback_only(prism_binary, pretrained_cache, tmp_path):  # noqa: F811
    folder, output = tmp_path / "incoming", tmp_path / "tags"
    folder.mkdir()
    watcher = Watcher(folder, output, f"duckdb:///{tmp_path / 'c.duckdb'}", tmp_path / "watch.log", prism_binary)
    sampler = Sampler(watcher.process.pid)
    try:
        shutil.copy(sorted(GTZAN.glob("*/*.flac"))[0], folder / "one.flac")
        watcher.wait_for(lambda: watcher.rows(), "the clip's row")
        assert watcher.stop() == 0
    finally:
        seen = sampler.stop()
        if watcher.process.poll() is None:
            watcher.process.kill()
    assert any(s.command == "prism" for s in seen) and any(s.command.startswith("python") for s in seen), seen
    assert not [str(s) for s in seen if not s.loopback_only]
