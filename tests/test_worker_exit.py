"""runners/worker_exit.py: a local SDK worker process skips the native teardown, but runs every
Python exit handler and keeps its exit status. A process that looks like one (Beam's worker module
name, the control-service variable Beam sets) stands in for a worker here; the real thing runs in
the multi-process pipeline tests, where Beam fails the job if a worker exits non-zero."""

import os
import pathlib
import subprocess
import sys

import pytest

from runners import worker_exit

REPO = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = """
import atexit, pathlib, sys
sys.path.insert(0, {repo!r})
out = pathlib.Path(sys.argv[1])
atexit.register(lambda: out.write_text("handler registered first ran"))  # before the package's import
import transforms  # noqa: F401  (installs the exit)
from runners import worker_exit
print("installed" if worker_exit._installed else "not installed", flush=True)
if sys.argv[2] == "raise":
    raise RuntimeError("the harness failed")
"""


def _run(tmp_path, how: str, *, worker: bool) -> tuple[subprocess.CompletedProcess, pathlib.Path]:
    script = tmp_path / "sdk_worker_main.py"  # the name Beam's worker module has
    script.write_text(SCRIPT.format(repo=str(REPO)))
    out = tmp_path / f"{how}-{worker}.txt"
    env = {k: v for k, v in os.environ.items() if k != "CONTROL_API_SERVICE_DESCRIPTOR"}
    if worker:
        env["CONTROL_API_SERVICE_DESCRIPTOR"] = 'url: "localhost:1"'
    done = subprocess.run([sys.executable, str(script), str(out), how], capture_output=True, text=True, env=env,
                          timeout=60)
    return done, out


@pytest.mark.parametrize("how, status", [("return", 0), ("raise", 1)])
def test_a_worker_process_keeps_its_exit_status_and_runs_every_exit_handler(tmp_path, how, status):
    done, out = _run(tmp_path, how, worker=True)
    assert done.stdout.strip() == "installed"
    assert done.returncode == status, done.stderr
    assert out.read_text() == "handler registered first ran"
    assert ("RuntimeError: the harness failed" in done.stderr) == (how == "raise")


def test_other_processes_are_left_alone(tmp_path):
    assert not worker_exit.in_sdk_worker_process()  # this test process
    done, out = _run(tmp_path, "raise", worker=False)
    assert done.stdout.strip() == "not installed" and done.returncode == 1
    assert out.read_text() == "handler registered first ran"
