"""The `cattag` process exits without the native teardown, once its Python exit handlers have run."""

from __future__ import annotations

import atexit
import os
import sys


def exit_without_native_teardown(code: int) -> None:
    """Python's exit handlers, then exit without the C++ static destructors that run after them.

    After a complete, successful run, TensorFlow's and gRPC's native threads sometimes abort the
    process while it tears down ("terminate called without an active exception", exit status 134:
    2 of 22 one-track `cattag tag` runs here), which would tell a script that a good run failed. Every Python
    exit handler still runs first (Beam stopping its job servers, logging's flush, the stderr filter
    draining), so nothing is lost but the native teardown the operating system does anyway."""
    atexit._run_exitfuncs()  # pylint: disable=protected-access
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
