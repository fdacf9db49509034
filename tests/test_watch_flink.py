"""cattag tag --watch on Flink (embedded in the job server cattag starts) with checkpointing on.

The same contract as the Prism watch (tests/test_watch.py), as a user runs it: files dropped while it
runs, one written slowly (read only once complete), one replaced; SIGTERM drains it; a second session
tags only what is new or changed since. With checkpointing on, Beam keeps Flink's sources up for ever, so
the stop is the launcher's: once the source has stopped and every file it emitted is written, it ends the
job (runners/streaming.py). Each session waits for its first rows under a deadline: a job whose source
never polls (what Beam's buffered bundle outputs did to the Impulse's step: runners/pipeline.py,
_finish_bundles_before_checkpoints) fails it.
"""

from __future__ import annotations

import os
import shutil
import time

import pytest

from schemas import tags
from tests.test_flink import flink_jar, flink_version  # noqa: F401 (fixture)
from tests.test_watch import Watcher


def _rows(watcher) -> list[tuple[str, str]]:
    return sorted((r["track_id"], r[tags.FINGERPRINT]) for r in watcher.rows())


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_the_watch_on_flink_with_checkpoints_tags_each_arrival_once_and_stops_drained(
        flink_jar, gtzan_dir, pretrained_cache, tmp_path):  # noqa: F811
    folder, output, log = tmp_path / "incoming", tmp_path / "tags", tmp_path / "watch.log"
    folder.mkdir()
    db = f"duckdb:///{tmp_path / 'c.duckdb'}"
    flags = ("--runner", "FlinkRunner", "--flink_master", "[local]", "--flink_job_server_jar", flink_jar,
             "--flink_version", flink_version(), "--checkpointing_interval", "2000",
             f"--job_server_jvm_properties=-Djava.io.tmpdir={tmp_path}")
    clips = sorted(gtzan_dir.glob("*/*.flac"))
    blues, rock, jazz, metal = (next(c for c in clips if c.parent.name == g) for g in ("blues", "rock", "jazz", "metal"))

    watcher = Watcher(folder, output, db, log, None, flags)
    try:
        shutil.copy(blues, folder / "blues.flac")
        shutil.copy(rock, folder / "rock.flac")
        watcher.wait_for(lambda: {r["track_id"] for r in watcher.rows()} >= {"blues.flac", "rock.flac"},
                         "rows of the first two clips", timeout_s=180)
        data = jazz.read_bytes()
        step = len(data) // 20 + 1
        with (folder / "slow.flac").open("wb") as slow:  # pauses shorter than --stable-after
            for start in range(0, len(data), step):
                slow.write(data[start:start + step])
                slow.flush()
                time.sleep(0.1)
        shutil.copy(metal, folder / "rock.flac.part")
        os.replace(folder / "rock.flac.part", folder / "rock.flac")  # replaced: tagged again
        watcher.wait_for(lambda: len(watcher.rows()) == 4, "rows of the slow and the replaced file")
        assert watcher.stop() == 0
    finally:
        if watcher.process.poll() is None:
            watcher.process.kill()
    text = log.read_text()
    assert "watch stopped (DONE)" in text and "Traceback" not in text, text[-3000:]
    first = _rows(watcher)
    assert [track for track, _ in first] == ["blues.flac", "rock.flac", "rock.flac", "slow.flac"]

    assert len(first) == len(set(first))  # one row per (track, content)

    # Restart: a new file and a touched one (same content); only the new one is tagged.
    shutil.copy(jazz, folder / "new.flac")
    os.utime(folder / "blues.flac")
    watcher = Watcher(folder, output, db, log, None, flags)
    try:
        watcher.wait_for(lambda: "new.flac" in {r["track_id"] for r in watcher.rows()}, "the new file's row",
                         timeout_s=180)
        time.sleep(2)  # a few more polls: nothing else arrives
        assert watcher.stop() == 0
    finally:
        if watcher.process.poll() is None:
            watcher.process.kill()
    text = log.read_text()
    assert text.count("watch stopped (DONE)") == 2 and "Traceback" not in text, text[-3000:]
    assert "4 files seen complete, 1 tagged, 0 failed, 3 unchanged since tagged" in text, text[-3000:]
    after = _rows(watcher)
    assert [track for track, _ in after] == ["blues.flac", "new.flac", "rock.flac", "rock.flac", "slow.flac"]
    assert len(after) == len(set(after))
