"""The watch's sink: each window of tag rows and failures written as one Parquet file each, atomically,
and upserted into the database, as `cattag load` would.

    rows, failures --Outcomes--> (None, ("row", row) | ("failure", Failure)) --GroupByKey per window-->
        WriteWindow -> OUT/tags-watch-<session>-<window>.parquet, OUT/_errors/watch-<session>-<window>.parquet, --db

A row replaced twice within one window is written once, its latest version.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from database import connect
from schemas.failure import ERRORS_SCHEMA, Failure
from schemas.tag_output import TagOutput
from transforms import counters
from transforms.link_copies import HeldRecordings, link_window
from transforms.progress import EventLog

_DB_RETRY_S = 60.0
ROW, FAILURE = "row", "failure"
COPIES_OFF, COPIES_WINDOW, COPIES_HELD = "off", "window", "held"


def as_row_outcome(row: dict) -> tuple[None, tuple[str, dict]]:
    return None, (ROW, row)


def as_failure_outcome(failure: Failure) -> tuple[None, tuple[str, Failure]]:
    return None, (FAILURE, failure)


class WriteWindows(beam.PTransform):
    """{'rows': tag rows, 'failures': Failure}, windowed -> the paths of the files each window wrote."""

    def __init__(self, output: str, session: str, schema: pa.Schema, db_url: str | None, events_dir: str | None,
                 copies: str = COPIES_OFF):
        super().__init__()
        self._writer = WriteWindow(output, session, schema, db_url, events_dir, copies)

    def expand(self, outcomes):
        return (
            (outcomes["rows"] | "RowOutcomes" >> beam.Map(as_row_outcome),
             outcomes["failures"] | "FailureOutcomes" >> beam.Map(as_failure_outcome))
            | "Outcomes" >> beam.Flatten()
            | "ByWindow" >> beam.GroupByKey()
            | "WriteWindow" >> beam.ParDo(self._writer)
        )


class WriteWindow(beam.DoFn):
    """(None, [("row", row) | ("failure", Failure)]) of one window -> its Parquet files and DB upsert.

    `copies`: COPIES_WINDOW gives copies within a window one recording id; COPIES_HELD also links them to
    the recordings OUT holds (transforms/link_copies.py); COPIES_OFF (no fingerprints) leaves them null."""

    def __init__(self, output: str, session: str, schema: pa.Schema, db_url: str | None, events_dir: str | None,
                 copies: str = COPIES_OFF):
        self._output = output
        self._session = session
        self._schema = schema
        self._db_url = db_url
        self._events_dir = events_dir
        self._copies = copies

    def setup(self) -> None:
        self._events = EventLog(self._events_dir) if self._events_dir else None
        # One instance per worker; the window step has one key, so one worker keeps the held index.
        self._held = HeldRecordings(self._output) if self._copies == COPIES_HELD else None

    def process(self, keyed, window=beam.DoFn.WindowParam) -> Iterator[str]:
        _, outcomes = keyed
        latest: dict[str, dict] = {}
        failures: list[Failure] = []
        for kind, value in outcomes:
            if kind == ROW:
                held = latest.get(value["track_id"])
                if held is None or value["tagged_at"] >= held["tagged_at"]:  # replaced twice in one window
                    latest[value["track_id"]] = value
            else:
                failures.append(value)
        name = f"{self._session}-{window.start.to_utc_datetime():%Y%m%dT%H%M%S.%f}"[:-3]
        output = TagOutput(self._output)
        written = []
        if latest:
            path = output.watch_file(name)
            rows = [latest[track_id] for track_id in sorted(latest)]
            if self._copies != COPIES_OFF:
                rows = link_window(rows, self._held)
            write_atomically(pa.Table.from_pylist(rows, schema=self._schema), path)
            if self._db_url:
                upsert(self._db_url, path)
            now = time.time()
            for row in rows:
                modified = _mtime(row["uri"])
                if modified is not None:
                    counters.WATCH_LATENCY_MS.update(int(max(0.0, now - modified) * 1000))
            counters.WATCH_TAGGED.inc(len(rows))
            written.append(path)
        if failures:
            path = output.watch_errors_file(name)
            failures.sort(key=lambda f: (f.track_id, f.stage))
            write_atomically(pa.Table.from_pylist([f.to_row() for f in failures], schema=ERRORS_SCHEMA), path)
            counters.WATCH_FAILED.inc(len(failures))
            written.append(path)
        if self._events:
            self._events.write({"tagged": sorted(latest), "failed": sorted({f.track_id for f in failures})})
        yield from written


def write_atomically(table: pa.Table, path: str) -> None:
    """Writes next to `path` under a dot-name that no reader globs, then renames: a reader (or a
    rerun of the same window after a retry) never sees half a file."""
    folder, name = FileSystems.split(path)
    temporary = FileSystems.join(folder, f".{name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        handle = FileSystems.create(temporary, compression_type=CompressionTypes.UNCOMPRESSED)
    except OSError:
        FileSystems.mkdirs(folder)
        handle = FileSystems.create(temporary, compression_type=CompressionTypes.UNCOMPRESSED)
    with handle:
        pq.write_table(table, handle)
    if FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([temporary], [path])


def upsert(db_url: str, path: str) -> None:
    """`cattag load` of one file; waits out another writer's lock (DuckDB allows one) for a while."""
    deadline = time.monotonic() + _DB_RETRY_S
    delay = 0.1
    while True:
        try:
            with connect(db_url) as database:
                database.load([path])
            return
        except Exception as err:  # noqa: BLE001 (DuckDB's lock error and psycopg's are unrelated types)
            if time.monotonic() > deadline or "lock" not in str(err).lower():
                raise
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


def _mtime(uri: str) -> float | None:
    try:
        return FileSystems.match([uri])[0].metadata_list[0].last_updated_in_seconds
    except (OSError, IndexError, ValueError):
        return None
