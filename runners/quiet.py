"""Quiet by default: what native libraries print on their own stays off the user's screen.

Native code writes straight to the process's stderr (file descriptor 2), below Python's logging:
  * TensorFlow: its C++ logging, which TF_CPP_MIN_LOG_LEVEL=3 turns off once TensorFlow has loaded
    ("failed call to cuInit" on a machine without a GPU is an error line), and the lines it writes
    while it loads, before that setting applies ("All log messages before absl::InitializeLog() ...",
    "oneDNN custom operations are on", "Could not find cuda drivers"), twice per process;
  * libmpg123 inside libsndfile, which prints "Note: Illegal Audio-MPEG-Header ... Trying to
    resync..." or "part2_3_length too large" for every damaged MP3 frame, with no setting to stop it.
For those, `filter_native_noise` puts a pipe in front of file descriptor 2 and a thread that drops
their lines and passes every other line through. Python's own sys.stderr (logging, warnings,
tracebacks) then writes to the terminal directly, so it stays in order with stdout.

This is the `cattag` command's behaviour, not the library's: the command sets CATTAG_QUIET=1 (local
worker processes inherit it) unless given --verbose, and only then do the filters go in.
"""

from __future__ import annotations

import atexit
import os
import re
import sys
import threading

QUIET_ENV = "CATTAG_QUIET"
_NOISE = re.compile(
    # libmpg123: its notes and its "[src/libmpg123/...]" errors and warnings
    rb"^(\[src/libmpg123/|\[[^\]]*mpg123[^\]]*\]|Note: (Illegal Audio-MPEG-Header|Trying to resync|Skipped \d+ bytes"
    rb"|Hit end of \(available\) data|Encountered error)|.*part2_3_length .*too large"
    # TensorFlow while it loads: absl's notice, then INFO and WARNING lines in absl's format
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    rb"|[IW]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [\w./-]+:\d+\] )")
_lock = threading.Lock()
_installed = False
dropped_lines = 0  # lines this process dropped (for tests)


def requested() -> bool:
    return os.environ.get(QUIET_ENV) == "1"


def configure(*, verbose: bool) -> None:
    """For the cattag command, before TensorFlow loads: quiet unless verbose, here and in the local
    worker processes it starts (they inherit the environment)."""
    if verbose:
        os.environ.pop(QUIET_ENV, None)
        return
    os.environ[QUIET_ENV] = "1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    filter_native_noise()


def is_noise(line: bytes) -> bool:
    return bool(_NOISE.match(line.lstrip()))


def filter_native_noise() -> None:
    """Drops native libraries' noise from this process's stderr (once per process; only when quiet
    is requested). The decoding DoFn calls it too, for worker processes that did not inherit it."""
    global _installed
    if not requested():
        return
    with _lock:
        if _installed:
            return
        _installed = True
        sys.stderr.flush()
        original = os.dup(2)
        read_end, write_end = os.pipe()
        os.dup2(write_end, 2)
        os.close(write_end)
        thread = threading.Thread(target=_pass_through, args=(read_end, original), name="cattag-stderr",
                                  daemon=True)
        thread.start()
        # Python's stderr straight to the terminal: in order with stdout, and no noise to filter.
        sys.stderr = open(os.dup(original), "w", buffering=1, encoding=sys.stderr.encoding or "utf-8",
                          errors="backslashreplace")

        def restore() -> None:  # at exit: drain what is in the pipe, then write straight to stderr again
            os.dup2(original, 2)  # closes the pipe's last write end: the reader drains and stops
            thread.join(timeout=2.0)

        atexit.register(restore)


def _pass_through(read_end: int, original: int) -> None:
    """Copies the pipe to the real stderr line by line, without the noise. A line ends at "\\n" or
    "\\r" (a line redrawn in place goes through at once, not at the next newline)."""
    global dropped_lines
    pending = b""
    while chunk := os.read(read_end, 65536):
        pending += chunk
        end = max(pending.rfind(b"\n"), pending.rfind(b"\r")) + 1
        complete, pending = pending[:end], pending[end:]
        kept = []
        for line in _LINES.findall(complete):
            if is_noise(line):
                dropped_lines += 1
            else:
                kept.append(line)
        if kept:
            os.write(original, b"".join(kept))
    if pending and not is_noise(pending):
        os.write(original, pending)
    os.close(read_end)


_LINES = re.compile(rb"[^\r\n]*(?:\r\n|\r|\n)")
