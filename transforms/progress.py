"""Progress of a local run, across worker processes.

Workers (threads or processes of the DirectRunner, or embedded Flink's Python workers) each write
their running totals to a small JSON file in a shared local folder; the launcher sums the files
every few seconds and prints one line. Files, rather than Beam metrics, because the DirectRunner
only reports metrics once the pipeline has finished.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import sys
import threading
import time
import uuid
from typing import TextIO

_LOG = logging.getLogger("cattag.progress")
_FLUSH_EVERY_S = 1.0


class ProgressTicker:
    """Worker side: counts inputs done and audio seconds, flushing at most once a second."""

    def __init__(self, directory: str):
        self._path = pathlib.Path(directory) / f"{os.getpid()}-{uuid.uuid4().hex}.json"
        self._inputs = 0
        self._audio_s = 0.0
        self._flushed_at = 0.0

    def tick(self, *, audio_s: float) -> None:
        self._inputs += 1
        self._audio_s += audio_s
        if time.monotonic() - self._flushed_at >= _FLUSH_EVERY_S:
            self.flush()

    def flush(self) -> None:
        temporary = self._path.with_suffix(".tmp")
        temporary.write_text(json.dumps({"inputs": self._inputs, "audio_s": self._audio_s}))
        temporary.replace(self._path)  # atomic: the reader never sees half a file
        self._flushed_at = time.monotonic()


def read_progress(directory: str) -> tuple[int, float]:
    """Sums every worker's totals: (inputs done, audio seconds)."""
    inputs, audio_s = 0, 0.0
    for path in pathlib.Path(directory).glob("*.json"):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # a file replaced between glob and read: the next poll sees it
        inputs += data["inputs"]
        audio_s += data["audio_s"]
    return inputs, audio_s


class ProgressMonitor:
    """Launcher side: a thread that reports 'N/total inputs, audio-s/s' until stopped.

    On a terminal, one line redrawn in place every second and left showing the final count; otherwise
    (a log file, CI) a plain log line every `every_s` seconds and one at the end."""

    def __init__(self, directory: str, *, total: int | None, label: str, every_s: float = 10.0,
                 stream: TextIO | None = None):
        self._directory = directory
        self._total = total
        self._label = label
        self._stream = stream or sys.stderr
        self._tty = _is_terminal(self._stream)  # decided now: a filter may later put a pipe on stderr
        self._every_s = 1.0 if self._tty else every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cattag-progress", daemon=True)
        self._started = time.monotonic()

    def __enter__(self) -> ProgressMonitor:
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._report(final=True)

    def _run(self) -> None:
        while not self._stop.wait(self._every_s):
            self._report(final=False)

    def line(self) -> str:
        inputs, audio_s = read_progress(self._directory)
        elapsed = time.monotonic() - self._started
        done = (f"{inputs}/{self._total} inputs ({100.0 * inputs / max(self._total, 1):.0f}%)"
                if self._total is not None else f"{inputs} inputs so far")  # listed by the workers
        return (f"{self._label}: {done}, {audio_s / 3600:.2f} audio hours, {audio_s / max(elapsed, 1e-9):.1f} "
                f"audio-s/s, {elapsed:.0f} s")

    def _report(self, *, final: bool) -> None:
        if self._tty:  # redraw in place; the final state stays on screen
            self._stream.write("\r\x1b[K" + self.line() + ("\n" if final else ""))
            self._stream.flush()
        elif not final or time.monotonic() - self._started >= self._every_s:  # a short run needs no line
            _LOG.info("%s", self.line())


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class EventLog:
    """Worker side of a long-running job's status: appends JSON lines to this process's own file."""

    def __init__(self, directory: str):
        self._path = pathlib.Path(directory) / f"{os.getpid()}-{uuid.uuid4().hex}.events"

    def write(self, event: dict) -> None:
        with self._path.open("a") as handle:  # one write per line: a reader sees whole lines or none
            handle.write(json.dumps(event) + "\n")


class EventReader:
    """Launcher side: the events appended to a folder's event files since the last call."""

    def __init__(self, directory: str):
        self._directory = pathlib.Path(directory)
        self._offsets: dict[pathlib.Path, int] = {}

    def read(self) -> list[dict]:
        events = []
        for path in sorted(self._directory.glob("*.events")):
            with path.open("rb") as handle:
                handle.seek(self._offsets.get(path, 0))
                data = handle.read()
            complete = data[: data.rfind(b"\n") + 1]  # a line still being written waits for the next call
            self._offsets[path] = self._offsets.get(path, 0) + len(complete)
            events.extend(json.loads(line) for line in complete.splitlines() if line.strip())
        return events
