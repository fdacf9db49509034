"""Local SDK worker processes leave without the native teardown once their work is done.

With `--direct_running_mode multi_processing` Beam starts each worker as `python -m
apache_beam.runners.worker.sdk_worker_main` and, at the end of the job, closes them one after the
other, waiting for each process to exit. A worker's harness returns within milliseconds of being
told to stop, but the interpreter's finalization after it (gRPC's and the other native libraries'
teardown, after Python's exit handlers) took 0.58 s per worker here: 1.2 s of a 3.6 s one-track
`cattag featurize` with two workers, more than the two workers' actual work
(bench/featurize_bench.py; bench/RESULTS.md). It is the same teardown the `cattag` command skips in
its own process (runners/process_exit.py), for the same reason: the operating system frees all of it
anyway.

`install()` registers an exit handler that runs every other Python exit handler first (logging's
flush, the stderr filter's drain) and then ends the process with the status Python would have
given it: 1 when an exception went uncaught (Python leaves it in sys.last_value), else 0. Beam's
worker never calls sys.exit with another status. It acts only in a process started as Beam's
worker module (local worker processes, a worker pool's processes, the SDK container's worker on a
cluster, where it is as harmless: the harness has returned, only the teardown is left), never in
the launcher or in workers that run as threads (multi_threading, LOOPBACK). The `transforms`
package calls it on import, which every worker does when it unpickles the first cattag step it runs.
"""

from __future__ import annotations

import atexit
import os
import sys

_WORKER_MODULE = "sdk_worker_main.py"
_installed = False


def in_sdk_worker_process() -> bool:
    """Whether this process is a Beam SDK worker started as its own Python process."""
    return bool(os.environ.get("CONTROL_API_SERVICE_DESCRIPTOR")) and sys.argv[0].endswith(_WORKER_MODULE)


def install() -> None:
    """In a local SDK worker process: skip the native teardown at exit (once per process)."""
    global _installed
    if _installed or not in_sdk_worker_process():
        return
    _installed = True
    atexit.register(_exit_after_python_handlers)


def _exit_after_python_handlers() -> None:
    # Registered after the others, so it runs first (atexit is last in, first out): run the rest now.
    atexit.unregister(_exit_after_python_handlers)
    atexit._run_exitfuncs()  # pylint: disable=protected-access
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1 if hasattr(sys, "last_value") else 0)
