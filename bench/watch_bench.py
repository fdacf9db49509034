"""cattag tag --watch: latency from a file being complete to its row in the database, and backlog throughput.

    .venv/bin/python bench/watch_bench.py [--files 50] [--rate 0.5] [--backlog-copies 10] [--runner-flags "..."]

One watcher process (musicnn-msd zero-shot, Prism, --poll-interval 2, --window 2, --db), started and
warmed up on one clip, then:
  1. latency: --files GTZAN-dev clips dropped one at a time, --rate seconds apart (each written beside
     the folder and renamed in, so it is complete at the rename); for each, the time from the rename to
     its row in the database, polled every 0.2 s with a read-only connection;
  2. backlog: --backlog-copies x the 60 clips (symlinks with distinct names) moved in at once by one
     rename of a folder; the time until the last of them has a row in OUT, beside a batch `cattag tag`
     of the same files run before the watcher starts (wall time of the whole command, as a user sees it);
     --backlog-copies 0 leaves it out.
--runner-flags runs the watcher on another runner (e.g. "--runner FlinkRunner --flink_master [local]
--flink_job_server_jar JAR --flink_version 1.19 --checkpointing_interval 2000"); the batch command stays on
DirectRunner.
"""

from __future__ import annotations

import argparse
import os
import shlex
import pathlib
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import duckdb
import pyarrow.parquet as pq

REPO = pathlib.Path(__file__).resolve().parents[1]
GTZAN = REPO.parent / "shared" / "data" / "gtzan-dev"
sys.path.insert(0, str(REPO))

from schemas import (
    tag_output,  # noqa: E402
)


def cattag(*args: str, **popen) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.Popen([sys.executable, "-m", "pipelines.cli", *args], cwd=REPO, env=env, **popen)


def db_track_ids(db: pathlib.Path) -> set[str]:
    try:
        with duckdb.connect(str(db), read_only=True) as con:
            return {row[0] for row in con.execute("SELECT track_id FROM tags").fetchall()}
    except (duckdb.IOException, duckdb.CatalogException):
        return set()  # the watcher holds the lock, or has not created the table yet: poll again


def out_track_ids(output: pathlib.Path) -> set[str]:
    ids = set()
    for path in output.glob(tag_output.TAGS_GLOB):
        try:
            ids.update(pq.read_table(path, columns=["track_id"])["track_id"].to_pylist())
        except OSError:
            pass
    return ids


def wait_until(condition, timeout_s: float, what: str) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout_s:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.2)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=50)
    parser.add_argument("--rate", type=float, default=0.5, help="seconds between two dropped files")
    parser.add_argument("--backlog-copies", type=int, default=10)
    parser.add_argument("--poll-interval", type=float, default=2.0)
    parser.add_argument("--runner-flags", default="", help="flags that choose the watcher's runner")
    args = parser.parse_args()

    clips = sorted(GTZAN.glob("*/*.flac"))
    work = pathlib.Path(tempfile.mkdtemp(prefix="cattag-watch-bench-"))
    backlog = work / "backlog"
    backlog.mkdir()
    for copy in range(args.backlog_copies):
        for clip in clips:
            (backlog / f"{copy:02d}-{clip.name}").symlink_to(clip)

    batch_s = 0.0
    if args.backlog_copies:
        started = time.monotonic()
        batch = cattag("tag", "--input", str(backlog), "--model", "musicnn-msd", "--output", str(work / "batch"),
                       "--progress", "off", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        _, err = batch.communicate()
        if batch.returncode:
            raise SystemExit(f"batch tag failed:\n{err[-2000:]}")
        batch_s = time.monotonic() - started
        n_backlog = len(clips) * args.backlog_copies
        print(f"batch cattag tag: {n_backlog} tracks in {batch_s:.1f} s ({n_backlog / batch_s:.2f} tracks/s)",
              flush=True)

    folder, output, db = work / "incoming", work / "watch", work / "catalogue.duckdb"
    folder.mkdir()
    shutil.copy(clips[0], folder / "warmup.flac")
    log = (work / "watch.log").open("wb")
    watcher = cattag("tag", "--watch", "--input", str(folder), "--model", "musicnn-msd", "--output", str(output),
                     "--db", f"duckdb:///{db}", "--poll-interval", str(args.poll_interval), "--window",
                     str(args.poll_interval), *shlex.split(args.runner_flags), stdout=log, stderr=subprocess.STDOUT)
    try:
        startup_s = wait_until(lambda: "warmup.flac" in db_track_ids(db), 300, "the warm-up clip")
        print(f"watcher up, first row in the database after {startup_s:.1f} s", flush=True)

        latencies = {}
        pending: dict[str, float] = {}
        staging = work / "staging"
        staging.mkdir()
        next_drop = time.monotonic()
        dropped = 0
        deadline = time.monotonic() + args.files * args.rate + 300
        while (dropped < args.files or pending) and time.monotonic() < deadline:
            if dropped < args.files and time.monotonic() >= next_drop:
                name = f"steady-{dropped:03d}.flac"
                shutil.copy(clips[dropped % len(clips)], staging / name)
                os.replace(staging / name, folder / name)
                pending[name] = time.monotonic()
                dropped += 1
                next_drop += args.rate
            present = db_track_ids(db)
            for name in [n for n in pending if n in present]:
                latencies[name] = time.monotonic() - pending.pop(name)
            time.sleep(0.05)
        if pending:
            raise SystemExit(f"{len(pending)} files never reached the database")
        values = sorted(latencies.values())
        p95 = values[min(len(values) - 1, int(round(0.95 * (len(values) - 1))))]
        print(f"latency, file complete -> row in the database, {len(values)} files every {args.rate} s: "
              f"median {statistics.median(values):.1f} s, p95 {p95:.1f} s, max {values[-1]:.1f} s", flush=True)

        if not args.backlog_copies:
            return
        before = out_track_ids(output)
        moved = time.monotonic()
        os.replace(backlog, folder / "backlog")
        expected = {f"backlog/{p.name}" for p in (folder / "backlog").iterdir()}
        drain_s = wait_until(lambda: expected <= out_track_ids(output) - before, 1800, "the backlog")
        del moved
        print(f"backlog: {len(expected)} tracks moved in at once, all in OUT after {drain_s:.1f} s "
              f"({len(expected) / drain_s:.2f} tracks/s) = {batch_s / drain_s:.2f}x the batch command", flush=True)
    finally:
        watcher.send_signal(signal.SIGTERM)
        try:
            watcher.wait(120)
        except subprocess.TimeoutExpired:
            watcher.kill()
        log.close()
    print(f"\nwork folder (watch.log, outputs): {work}")


if __name__ == "__main__":
    main()
