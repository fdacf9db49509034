"""Beam's Prism runner, built from source and cached: the default runner of `cattag tag --watch`.

Beam Python downloads Prism's binary from GitHub when a job starts, which fails offline and on
machines that reach only package registries. Prism is a Go program in Beam's repository, so
`go build` builds the one matching the installed Beam through the Go module proxy (about 2
minutes on 2 cores, a 66 MB binary) into the cattag cache, from a copy of Beam's Go module with one
line changed at build time (Beam's source is not in this repository): Prism serves its job API and its workers' Fn API on one port that
it opens on every interface (`net.Listen("tcp", ":PORT")`, no flag to narrow it), and whoever reaches the
job API can run code as this user; the build binds it to 127.0.0.1.

    make prism        # = python -m runners.prism build
    python -m runners.prism path

$CATTAG_PRISM names a binary to use instead.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import hashlib
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

from apache_beam.version import __version__ as BEAM_VERSION

from runners.loopback import bind_to_loopback
from runners.ports import free_port, listening
from schemas.cache import cache_root

MODULE = "github.com/apache/beam/sdks/v2/go/cmd/prism"
SDK_MODULE = "github.com/apache/beam/sdks/v2"
# The file and line the build changes: Prism's only listener (job API, artifacts and workers' Fn API share it).
LISTENER_SOURCE = "go/pkg/beam/runners/prism/internal/jobservices/server.go"
LISTEN_ANY = 'net.Listen("tcp", fmt.Sprintf(":%d", port))'
LISTEN_LOOPBACK = 'net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))'


class PrismMissing(OSError):
    """No Prism binary where cattag looks, or it would not start: a one-line error for the CLI."""


def cache_dir() -> pathlib.Path:
    # "-loopback": a build from before the listener patch is not reused
    return cache_root() / "prism" / f"v{BEAM_VERSION}-loopback"


def binary(location: str | None = None) -> pathlib.Path:
    """The Prism binary to run: `location` (--prism_location), $CATTAG_PRISM, else the cached build for
    this Beam version."""
    override = location or os.environ.get("CATTAG_PRISM")
    path = pathlib.Path(override) if override else cache_dir() / "prism"
    if not (path.is_file() and os.access(path, os.X_OK)):
        where = ("--prism_location" if location else "$CATTAG_PRISM") if override else "the cattag cache"
        raise PrismMissing(f"no Prism runner binary at {path} ({where}): build it with `make prism` "
                           f"(builds {MODULE} v{BEAM_VERSION} with Go, from the Go module proxy), "
                           "or pass --runner FlinkRunner with its flags")
    return path


def build(force: bool = False) -> pathlib.Path:
    """Build Prism v{BEAM_VERSION}, its listener bound to loopback, into the cache; returns its path."""
    target = cache_dir()
    path = target / "prism"
    if path.is_file() and not force:
        return path
    go = shutil.which("go")
    if not go:
        raise PrismMissing("building Prism needs Go (https://go.dev/doc/install, or Debian's golang-go >= 1.23)")
    target.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CGO_ENABLED": "0"}
    with tempfile.TemporaryDirectory(prefix="cattag-prism-") as scratch:
        module = _patched_module(go, env, pathlib.Path(scratch))
        done = subprocess.run([go, "build", "-trimpath", "-o", str(path) + ".tmp", "./go/cmd/prism"], cwd=module,
                              env=env, capture_output=True, text=True)
    if done.returncode:
        raise PrismMissing(f"building {MODULE}@v{BEAM_VERSION} failed:\n{done.stderr.strip()[-2000:]}")
    os.replace(str(path) + ".tmp", path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    (target / "SHA256SUMS").write_text(f"{digest}  prism\n")
    return path


def _patched_module(go: str, env: dict, scratch: pathlib.Path) -> pathlib.Path:
    """A copy of Beam's Go SDK module (its go/ tree: Go does not build from the read-only module cache with a
    file replaced) with Prism's listener bound to 127.0.0.1."""
    import json

    done = subprocess.run([go, "mod", "download", "-json", f"{SDK_MODULE}@v{BEAM_VERSION}"], env=env,
                          capture_output=True, text=True)
    if done.returncode:
        raise PrismMissing(f"go mod download {SDK_MODULE}@v{BEAM_VERSION} failed:\n{done.stderr.strip()[-2000:]}")
    source = pathlib.Path(json.loads(done.stdout)["Dir"])
    module = scratch / "sdks"
    shutil.copytree(source / "go", module / "go", copy_function=shutil.copyfile)
    for name in ("go.mod", "go.sum", "LICENSE"):
        shutil.copyfile(source / name, module / name)
    listener = module / LISTENER_SOURCE
    text = listener.read_text()
    if text.count(LISTEN_ANY) != 1:
        raise PrismMissing(f"{source / LISTENER_SOURCE}: the listener line to bind to loopback ({LISTEN_ANY}) is "
                           "not there once; Beam changed it: update LISTEN_ANY in runners/prism.py")
    listener.write_text(text.replace(LISTEN_ANY, LISTEN_LOOPBACK))
    return module


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runners.prism", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("build", "path"))
    parser.add_argument("--force", action="store_true", help="build again even when cached")
    args = parser.parse_args(argv)
    try:
        path = build(force=args.force) if args.command == "build" else binary()
    except PrismMissing as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"PRISM={path}")
    return 0



class PrismServer:
    """A Prism job server this process owns: in its own session, so that the Ctrl-C a terminal sends to
    the whole foreground group reaches only the watcher (which then drains the job through it), and
    tied to this process by PR_SET_PDEATHSIG, so that it ends when this process ends, however it ends
    (Beam's own launch leaves Prism running, orphaned, after a SIGTERM)."""

    def __init__(self, path: pathlib.Path, log_path: pathlib.Path, *, start_timeout_s: float = 60.0):
        self._path = path
        self._log_path = log_path
        self._timeout = start_timeout_s
        self._process: subprocess.Popen | None = None
        self.endpoint = ""

    def __enter__(self) -> PrismServer:
        port = free_port()
        log = self._log_path.open("ab")
        self._process = subprocess.Popen(
            [str(self._path), "--job_port", str(port), "--log_level", "warn", "--serve_http=false"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent)
        log.close()
        self.endpoint = f"localhost:{port}"
        deadline = time.monotonic() + self._timeout
        while not listening(port):
            if self._process.poll() is not None:
                raise PrismMissing(f"Prism exited with code {self._process.returncode} at start; its log: "
                                   f"{self._log_path}")
            if time.monotonic() > deadline:
                self.__exit__()
                raise PrismMissing(f"Prism did not listen on port {port} within {self._timeout:.0f} s")
            time.sleep(0.1)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._process and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()


def _die_with_parent() -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: Linux-only, and harmless to skip elsewhere


def binary_for(options) -> pathlib.Path | None:
    """The Prism binary to run a streaming job on, or None when the flags name another runner (Flink...)."""
    from apache_beam.options.pipeline_options import StandardOptions

    if options.view_as(StandardOptions).runner not in (None, "DirectRunner", "PrismRunner"):
        return None
    return binary(options.get_all_options().get("prism_location"))


@contextlib.contextmanager
def served(options, binary_path: pathlib.Path | None, log_path: pathlib.Path) -> Iterator[PrismServer | None]:
    """With a binary: our own Prism for the job (see PrismServer for why not Beam's), `options` pointed at it
    (the portable runner, LOOPBACK workers in this process). Without one: the flags' runner, unchanged."""
    if binary_path is None:
        yield None
        return
    from apache_beam.options.pipeline_options import PortableOptions, StandardOptions

    bind_to_loopback()  # the LOOPBACK worker pool in this process
    with PrismServer(binary_path, log_path) as server:
        options.view_as(StandardOptions).runner = "PortableRunner"
        options.view_as(PortableOptions).job_endpoint = server.endpoint
        options.view_as(PortableOptions).environment_type = "LOOPBACK"
        yield server


if __name__ == "__main__":
    sys.exit(main())
