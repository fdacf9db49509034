"""Quiet by default: native libraries' noise is taken out of a process's stderr, everything else passes."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

from runners import quiet

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_decoder_lines_are_recognized_and_nothing_else():
    for line in (b"Note: Illegal Audio-MPEG-Header 0x00000000 at offset 40.", b"Note: Trying to resync...",
                 b"Note: Skipped 1024 bytes in input.", b"Note: Hit end of (available) data during resync.",
                 b"[src/libmpg123/layer3.c:115] error: part2_3_length (3328) too large for available bit count (3240)",
                 b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
                 b"I0000 00:00:1796151939.517933   12750 port.cc:153] oneDNN custom operations are on.",
                 b"I0000 00:00:1796151939.527218   12750 cudart_stub.cc:31] Could not find cuda drivers"):
        assert quiet.is_noise(line), line
    for line in (b"12:00:01 featurize done: 2 inputs", b"Traceback (most recent call last):",
                 b"Note: this is a user's note", b"ValueError: part of a message",
                 b"E0000 00:00:1796151154.301023    6038 cuda_platform.cc:52] failed call to cuInit"):  # errors stay
        assert not quiet.is_noise(line), line


def run_filtered(code: str, *, verbose: bool) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), quiet.QUIET_ENV: "" if verbose else "1"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, env=env, timeout=120)


SNIPPET = """
import os, sys, soundfile
from runners import quiet
quiet.filter_native_noise()
os.write(2, b"I0000 00:00:1796151939.517933   12750 port.cc:153] oneDNN custom operations are on.\\n")
print("before", file=sys.stderr, flush=True)
open("/tmp/cattag-quiet-test.mp3", "wb").write(b"not an mp3, " * 10)
try:
    soundfile.read("/tmp/cattag-quiet-test.mp3")
except Exception as err:
    print("decode failed:", type(err).__name__, file=sys.stderr, flush=True)
sys.stderr.write("progress 1\\r"); sys.stderr.write("progress 2\\n"); sys.stderr.write("no newline at the end")
"""


def test_the_filter_drops_the_decoders_lines_and_keeps_the_rest_in_order():
    quiet_run, loud_run = run_filtered(SNIPPET, verbose=False), run_filtered(SNIPPET, verbose=True)
    assert quiet_run.returncode == loud_run.returncode == 0
    assert quiet_run.stderr == b"before\ndecode failed: LibsndfileError\nprogress 1\rprogress 2\nno newline at the end"
    assert b"Note: Illegal Audio-MPEG-Header" in loud_run.stderr  # verbose: the library's own lines stay
