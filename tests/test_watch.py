"""cattag tag --watch on the real Prism runner: a process watching a folder while files arrive.

The watcher runs as a user runs it (a `cattag` process, stopped with SIGTERM); files are dropped
into its folder while it runs: good clips, corrupt ones, one written slowly, one replaced. Waits
are bounded; what is checked is what lands in OUT and in the database.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time

import duckdb
import psycopg
import pyarrow.parquet as pq
import pytest

from database import parse_url
from runners import prism
from schemas import tag_output, tags
from schemas.failure import ERRORS_DIR
from tests import local_postgres
from tests.conftest import make_bad_files
from tests.test_database import postgres  # noqa: F401 (fixture)
from transforms.fingerprint import content_fingerprint
from transforms.progress import EventLog, EventReader
from transforms.watch import STOP, WatchState, WatchTracker, list_audio

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_the_watch_restriction_checkpoints_what_it_has_seen_and_stops_for_good():
    tracker = WatchTracker(WatchState())
    assert tracker.try_claim(0)
    tracker.current_restriction().seen["/m/a.flac"] = (10, 1.0)
    primary, residual = tracker.try_split(0)
    assert primary.done and residual.next_poll == 1 and residual.seen == {"/m/a.flac": (10, 1.0)}
    tracker.check_done()  # the primary is finished work
    assert tracker.try_split(0.5) is None  # a poll does not divide

    resumed = WatchTracker(residual)
    with pytest.raises(ValueError):
        resumed.check_done()  # neither stopped nor checkpointed
    assert resumed.try_claim(STOP) and not resumed.try_claim(2)
    resumed.check_done()
    assert resumed.try_split(0) is None  # nothing left after a stop


def test_listing_separates_audio_and_keeps_sizes_and_times(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.flac").write_bytes(b"1234")
    (tmp_path / "notes.txt").write_text("hello")
    root, audio, other = list_audio(str(tmp_path))
    assert root == str(tmp_path)
    assert [(pathlib.Path(a.path).name, a.size) for a in audio] == [("x.flac", 4)]
    assert abs(audio[0].mtime - os.path.getmtime(tmp_path / "a" / "x.flac")) < 1e-3
    assert [pathlib.Path(o).name for o in other] == ["notes.txt"]


def test_event_reader_returns_each_whole_line_once(tmp_path):
    EventLog(str(tmp_path)).write({"tagged": ["a"]})
    reader = EventReader(str(tmp_path))
    assert reader.read() == [{"tagged": ["a"]}]
    half = next(tmp_path.glob("*.events"))
    with half.open("a") as handle:
        handle.write('{"failed": ["b"]}\n{"tagg')
    assert reader.read() == [{"failed": ["b"]}]
    with half.open("a") as handle:
        handle.write('ed": ["c"]}\n')
    assert reader.read() == [{"tagged": ["c"]}]


@pytest.fixture(scope="module")
def prism_binary() -> pathlib.Path:
    return prism.build()  # cached by `make prism` (the test command); builds here otherwise


class Watcher:
    """A `cattag tag --watch` process and what it has written."""

    def __init__(self, folder: pathlib.Path, output: pathlib.Path, db: str, log: pathlib.Path,
                 prism_binary: pathlib.Path | None, runner_flags: tuple[str, ...] = ()):
        self.output, self.db = output, db
        self._log = log.open("ab")
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        if prism_binary:
            env["CATTAG_PRISM"] = str(prism_binary)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pipelines.cli", "tag", "--watch", "--input", str(folder), "--model",
             "musicnn-msd", "--output", str(output), "--db", db, "--poll-interval", "0.5",
             "--stable-after", "1", "--window", "1", "--status-every", "2", *runner_flags],
            cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def rows(self) -> list[dict]:
        return [r for f in sorted(self.output.glob(tag_output.TAGS_GLOB)) for r in pq.read_table(f).to_pylist()]

    def errors(self) -> list[dict]:
        return [r for f in sorted((self.output / ERRORS_DIR).glob("*.parquet"))
                for r in pq.read_table(f).to_pylist()]

    def wait_for(self, condition, what: str, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"the watcher exited ({self.process.returncode}) waiting for {what}"
            if condition():
                return
            time.sleep(0.3)
        raise AssertionError(f"no {what} within {timeout_s:.0f} s")

    def stop(self, timeout_s: float = 90.0) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout_s)
        finally:
            self._log.close()
        return code


def db_genres(url: str) -> dict[str, str | None]:
    """track id -> genre, as the database holds them now (read-only for DuckDB: the watcher may write)."""
    backend, target = parse_url(url)
    if backend == "duckdb":
        with duckdb.connect(target, read_only=True) as con:
            return dict(con.execute("SELECT track_id, genre FROM tags").fetchall())
    with psycopg.connect(target) as con:
        return dict(con.execute("SELECT track_id, genre FROM tags").fetchall())


def db_query(url: str, sql: str) -> dict:
    """The (key, value) rows of a query as a dict (read-only for DuckDB: the watcher may write)."""
    backend, target = parse_url(url)
    if backend == "duckdb":
        with duckdb.connect(target, read_only=True) as con:
            return dict(con.execute(sql).fetchall())
    with psycopg.connect(target) as con:
        return dict(con.execute(sql).fetchall())


@pytest.fixture(params=["duckdb", "postgresql"])
def db(request, tmp_path):
    if request.param == "duckdb":
        return f"duckdb:///{tmp_path / 'catalogue.duckdb'}"
    return local_postgres.create_database(request.getfixturevalue("postgres"), f"w_{tmp_path.name.lower()}")


def test_watch_tags_arrivals_once_each_and_survives_a_restart(gtzan_dir, pretrained_cache, prism_binary, db,
                                                              tmp_path):
    folder, output, log = tmp_path / "incoming", tmp_path / "tags", tmp_path / "watch.log"
    folder.mkdir()
    clips = sorted(gtzan_dir.glob("*/*.flac"))
    blues, rock, jazz, metal = (next(c for c in clips if c.parent.name == g) for g in ("blues", "rock", "jazz", "metal"))
    bad = make_bad_files(tmp_path / "bad")
    watcher = Watcher(folder, output, db, log, prism_binary)
    try:
        # Arrivals while it runs: two clips, two broken files, then one written slowly, in 40 chunks
        # over 4 s (each pause shorter than --stable-after): read only once complete.
        shutil.copy(blues, folder / "blues.flac")
        shutil.copy(rock, folder / "rock.flac")
        shutil.copy(tmp_path / "bad" / "truncated.flac", folder / "truncated.flac")
        shutil.copy(tmp_path / "bad" / "notes.mp3", folder / "notes.mp3")
        watcher.wait_for(lambda: {r["track_id"] for r in watcher.rows()} >= {"blues.flac", "rock.flac"},
                         "rows of the first two clips")
        data = jazz.read_bytes()
        step = len(data) // 40 + 1
        with (folder / "slow.flac").open("wb") as slow:
            for start in range(0, len(data), step):
                slow.write(data[start:start + step])
                slow.flush()
                time.sleep(0.1)
        assert "slow.flac" not in {r["track_id"] for r in watcher.rows()} | {e["track_id"] for e in watcher.errors()}
        watcher.wait_for(lambda: "slow.flac" in {r["track_id"] for r in watcher.rows()}, "the slow file's row")
        watcher.wait_for(lambda: len(watcher.errors()) == 2, "two errors")
        assert {e["track_id"]: e["stage"] for e in watcher.errors()} == {
            "truncated.flac": bad["truncated.flac"], "notes.mp3": bad["notes.mp3"]}

        # A replacement under the same name is tagged again, with its new content's fingerprint.
        old = {r["track_id"]: r for r in watcher.rows()}["rock.flac"]
        shutil.copy(metal, folder / "rock.flac.part")
        os.replace(folder / "rock.flac.part", folder / "rock.flac")
        watcher.wait_for(lambda: len([r for r in watcher.rows() if r["track_id"] == "rock.flac"]) == 2,
                         "a second row for the replaced file")
        time.sleep(2)  # a few more polls: nothing else arrives
        assert watcher.stop() == 0
    finally:
        if watcher.process.poll() is None:
            watcher.process.kill()
    text = log.read_text()
    assert "watch stopped" in text and "Traceback" not in text, text[-3000:]
    summary = re.search(r"watch stopped \((\w+)\): (\d+) files seen complete, (\d+) tagged, (\d+) failed", text)
    assert summary and summary.groups()[0] == "DONE" and summary.groups()[2:] == ("4", "2"), summary  # a drain
    assert "watch: " in text and "in flight" in text  # the status line

    rows = watcher.rows()
    replaced = [r for r in rows if r["track_id"] == "rock.flac"]
    assert sorted(r[tags.FINGERPRINT] for r in replaced) == sorted([content_fingerprint(str(rock)),
                                                                   content_fingerprint(str(metal))])
    assert old[tags.FINGERPRINT] == content_fingerprint(str(rock))
    assert sorted(r["track_id"] for r in rows) == ["blues.flac", "rock.flac", "rock.flac", "slow.flac"]
    newest = max(replaced, key=lambda r: r["tagged_at"])
    assert newest[tags.FINGERPRINT] == content_fingerprint(str(metal))
    slow_row = next(r for r in rows if r["track_id"] == "slow.flac")
    assert slow_row[tags.FINGERPRINT] == content_fingerprint(str(jazz))  # the whole file, not half of it
    assert db_genres(db) == {r["track_id"]: r["genre"] for r in rows if r is newest or r["track_id"] != "rock.flac"}
    assert not [p for p in _processes() if str(prism_binary) in p], "Prism outlived the watcher"

    # Restart: only what is new or changed since is tagged; _errors/ describes this session.
    shutil.copy(jazz, folder / "new.flac")
    os.utime(folder / "blues.flac")  # touched, same content
    watcher = Watcher(folder, output, db, log, prism_binary)
    try:
        watcher.wait_for(lambda: "new.flac" in {r["track_id"] for r in watcher.rows()}, "the new file's row")
        watcher.wait_for(lambda: len(watcher.errors()) == 2, "the broken files' errors, once each")
        time.sleep(2)
        assert watcher.stop() == 0
    finally:
        if watcher.process.poll() is None:
            watcher.process.kill()
    after = watcher.rows()
    assert sorted(r["track_id"] for r in after) == ["blues.flac", "new.flac", "rock.flac", "rock.flac", "slow.flac"]
    keys = [(r["track_id"], r[tags.FINGERPRINT]) for r in after]
    assert len(keys) == len(set(keys))
    assert sorted(e["track_id"] for e in watcher.errors()) == ["notes.mp3", "truncated.flac"]
    assert sorted(db_genres(db)) == ["blues.flac", "new.flac", "rock.flac", "slow.flac"]
    # new.flac is slow.flac's audio: it joins the recording the first session gave slow.flac.
    latest = {r["track_id"]: r for r in sorted(after, key=lambda r: r["tagged_at"])}
    assert all(r["recording_id"] for r in after)
    assert latest["new.flac"]["recording_id"] == latest["slow.flac"]["recording_id"]
    assert latest["new.flac"]["duplicate_of"] == "slow.flac" and latest["slow.flac"]["duplicate_of"] is None
    assert len({latest[t]["recording_id"] for t in ("blues.flac", "rock.flac", "slow.flac")}) == 3
    assert db_query(db, "SELECT track_id, recording_id FROM recordings") == {
        t: latest[t]["recording_id"] for t in latest}


def _processes() -> list[str]:
    done = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True)
    return done.stdout.splitlines()


def test_what_a_watch_cannot_start_with_is_one_line_each(tmp_path, capsys):
    from pipelines import cli

    base = ["tag", "--watch", "--model", "musicnn-msd", "--output", str(tmp_path / "out")]
    (tmp_path / "file.flac").write_bytes(b"x")
    cases = {
        "no such folder to watch": ["--input", str(tmp_path / "missing")],
        "needs a folder or a glob": ["--input", str(tmp_path / "file.flac")],
        "make prism": ["--input", str(tmp_path), "--prism_location", str(tmp_path / "no-prism")],
    }
    for expected, flags in cases.items():
        assert cli.main([*base, *flags]) == 2
        err = capsys.readouterr().err.strip()
        assert expected in err and "\n" not in err, err
    assert not (tmp_path / "out").exists()  # refused before touching OUT


class _Tracker(WatchTracker):
    """The view a runner hands to process(): a tracker that also records the deferral."""

    deferred = None

    def defer_remainder(self, delay=None):
        self.deferred = delay


def test_polls_emit_complete_files_oldest_first_a_slice_at_a_time_then_stop(tmp_path):
    from apache_beam.io.watermark_estimators import ManualWatermarkEstimator

    from transforms.watch import PollCatalogue

    now = time.time()
    for age, name in enumerate(["e.flac", "d.flac", "c.flac", "b.flac", "a.flac"], start=10):
        (tmp_path / name).write_bytes(b"x" * age)
        os.utime(tmp_path / name, (now - age, now - age))
    (tmp_path / "fresh.flac").write_bytes(b"still being written")
    stop = tmp_path / "stop"
    poll = PollCatalogue(str(tmp_path), poll_interval_s=1.0, stable_s=5.0, stop_file=str(stop), max_per_poll=2)
    poll.setup()
    state, emitted = WatchState(), []
    for _ in range(4):
        tracker = _Tracker(state)
        emitted.append([v.value.track_id for v in poll.process(None, tracker, ManualWatermarkEstimator(None))])
        assert tracker.deferred is not None
        state = tracker.try_split(0)[1]
    assert emitted == [["a.flac", "b.flac"], ["c.flac", "d.flac"], ["e.flac"], []]

    os.utime(tmp_path / "b.flac", (now - 7, now - 7))  # changed (touched) since: emitted again
    (tmp_path / "a.flac").unlink()
    tracker = _Tracker(state)
    assert [v.value.track_id for v in poll.process(None, tracker, ManualWatermarkEstimator(None))] == ["b.flac"]
    state = tracker.try_split(0)[1]
    assert "a.flac" not in {pathlib.Path(p).name for p in state.seen}

    stop.touch()
    tracker = _Tracker(state)
    assert list(poll.process(None, tracker, ManualWatermarkEstimator(None))) == []
    assert tracker.deferred is None
    tracker.check_done()
