"""A streaming job run until the user stops it: the first SIGINT/SIGTERM drains it, a second one cancels.

The job's source polls for a stop file (the watch's PollCatalogue): a signal touches it, the source stops
emitting, the open windows are written and the job ends. Meanwhile the launcher prints a status line
now and then from a `Status` the command provides.
"""

from __future__ import annotations

import logging
import pathlib
import signal
import threading
import time
from collections.abc import Callable
from typing import Protocol

import apache_beam as beam

_LOG = logging.getLogger(__name__)
# How long a drained job may go on ending by itself before the launcher ends it.
DRAINED_GRACE_S = 5.0


class Status(Protocol):
    """The launcher's running figures of a streaming job."""

    def update(self) -> None: ...

    def line(self) -> str: ...

    def drained(self) -> bool:
        """After a stop: everything the source emitted is written (False where the launcher cannot tell)."""
        ...


def run_until_stopped(pipeline: beam.Pipeline, stop_file: str, status: Status, *, stop_timeout_s: float,
                       status_every_s: float, label: str = "watch",
                       also_cancel: Callable[[], object] | None = None) -> str:
    """Runs the job; the first SIGINT/SIGTERM asks the source to stop (a drain), a second one, or the
    drain outlasting `stop_timeout_s`, cancels (through the runner, then `also_cancel`, for a job the
    runner may have lost hold of). Returns the job's final state."""
    stopping = threading.Event()
    signals = {"count": 0}

    def on_signal(signum, _frame):
        signals["count"] += 1
        pathlib.Path(stop_file).touch()
        stopping.set()
        if signals["count"] == 1:
            _LOG.info("%s: %s: finishing what is in flight, then stopping (again to cancel now)", label,
                      signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    result = pipeline.run()
    finished = threading.Event()
    outcome: dict[str, object] = {}

    def wait() -> None:
        try:
            outcome["state"] = result.wait_until_finish()
        except BaseException as err:  # noqa: BLE001 (handed to the main thread)
            outcome["error"] = err
        finished.set()

    threading.Thread(target=wait, name="cattag-watch-wait", daemon=True).start()
    try:
        last_status = time.monotonic()
        stop_deadline = drained_since = None
        while not finished.wait(0.5):
            status.update()
            if time.monotonic() - last_status >= status_every_s:
                _LOG.info("%s", status.line())
                last_status = time.monotonic()
            if stopping.is_set() and stop_deadline is None:
                stop_deadline = time.monotonic() + stop_timeout_s
            if stopping.is_set() and status.drained():
                # Drained, yet the job runs on: Flink with checkpointing keeps its sources up for ever
                # (Beam's shutdown_sources_after_idle_ms defaults to infinity then). Nothing is left in
                # flight, so ending the job loses nothing.
                drained_since = drained_since or time.monotonic()
                if time.monotonic() - drained_since > DRAINED_GRACE_S:
                    _LOG.info("%s: drained; ending the job (the runner keeps its sources up)", label)
                    _cancel(result, also_cancel)
                    finished.wait(30)
                    return "DONE"
            if stop_deadline is not None and (signals["count"] > 1 or time.monotonic() > stop_deadline):
                _LOG.warning("%s: cancelling the job (%s)", label, "second signal" if signals["count"] > 1
                             else f"the stop took over {stop_timeout_s:.0f} s")
                _cancel(result, also_cancel)
                finished.wait(30)
                return "CANCELLED"
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if "error" in outcome:
        raise outcome["error"]
    return str(outcome.get("state"))


def _cancel(result, also_cancel: Callable[[], object] | None) -> None:
    try:
        result.cancel()
    finally:
        if also_cancel:
            also_cancel()


def quiet_worker_shutdown() -> None:
    """The job has ended and Prism stops next: an SDK worker thread of this process still reading from it
    would report its closed gRPC stream as a traceback (logged, or raised out of the thread). That is
    shutdown noise, not news; the job's own failures were reported before this point."""
    import grpc

    logging.getLogger("apache_beam.runners.worker").setLevel(logging.CRITICAL)
    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        if not isinstance(args.exc_value, grpc.RpcError):
            previous(args)

    threading.excepthook = hook
