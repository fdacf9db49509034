"""cattag tag --watch: a long-running streaming job that keeps a growing catalogue tagged.

    PollCatalogue (every --poll-interval; complete files only) -> Fingerprint -> SkipUnchanged (state per
        track id) -> FixedWindows(--window) -> FeaturizeTracks -> TagTracks
        -> per window: OUT/tags-watch-<session>-<window>.parquet, OUT/_errors/watch-<session>-<window>.parquet,
           and an upsert of the window's rows into --db

It runs on Beam's Prism runner by default (`make prism` builds it) and on Flink by flags. SIGINT or
SIGTERM stops it cleanly: the source stops polling, every open window is tagged and written, and
the job ends; a second signal cancels at once. Starting the same command again tags only what is
new or changed since (content fingerprints), so rows are neither lost nor duplicated.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import os
import pathlib
import shutil
import signal
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions, PortableOptions, StandardOptions
from apache_beam.transforms import window

from database import connect, redact
from pipelines.options import CatalogueOptions
from runners import prism
from runners.pipeline import make_pipeline, runs_on_this_machine
from schemas import presets, tags
from schemas.failure import ERRORS_DIR, ERRORS_SCHEMA, Failure
from schemas.model_assets import read_model_assets
from transforms.catalogue import CatalogueEntry
from transforms.fingerprint import FingerprintInputs, SkipUnchanged
from transforms.progress import EventLog, EventReader
from transforms.watch import PollCatalogue, check_watchable

_LOG = logging.getLogger(__name__)
_NAMESPACE = "cattag"
WATCH_TAGGED = Metrics.counter(_NAMESPACE, "watch_tracks_written")
WATCH_FAILED = Metrics.counter(_NAMESPACE, "watch_inputs_failed")
LATENCY_MS = Metrics.distribution(_NAMESPACE, "watch_latency_ms")  # file complete -> its row written
WATCH_PREFIX = f"{tags.TAGS_PREFIX}-watch"
_DB_RETRY_S = 60.0


class WatchOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--watch", action="store_true",
                            help="keep running: tag each new or changed file of --input (a folder or a glob) as it "
                                 "arrives, until SIGINT/SIGTERM; on Prism unless --runner says otherwise")
        parser.add_argument("--db", help="with --watch: upsert each window's rows into this database "
                                         "(duckdb:///FILE or postgresql://...), as `cattag load` does")
        parser.add_argument("--poll-interval", type=float, default=2.0,
                            help="with --watch: seconds between listings of --input (default %(default)s)")
        parser.add_argument("--stable-after", type=float, default=None,
                            help="with --watch: a file is read once unmodified for this many seconds "
                                 "(default: --poll-interval)")
        parser.add_argument("--window", type=float, default=2.0,
                            help="with --watch: seconds of arrivals written together as one Parquet file and one "
                                 "database transaction (default %(default)s)")
        parser.add_argument("--max-per-poll", type=int, default=64,
                            help="with --watch: files sent to tagging per poll at most; a backlog goes out in "
                                 "slices, each written as it is tagged (default %(default)s)")
        parser.add_argument("--stop-timeout", type=float, default=120.0,
                            help="with --watch: seconds a stop may take to finish what is in flight before the job "
                                 "is cancelled (default %(default)s)")
        parser.add_argument("--status-every", type=float, default=10.0,
                            help="with --watch: seconds between status lines (default %(default)s)")


@dataclasses.dataclass(frozen=True)
class WatchRun:
    output: str
    model_version: str
    emitted: int
    tagged: int
    failed: int
    skipped: int
    wall_s: float
    state: str


def run(argv: list[str] | None = None) -> WatchRun:
    from pipelines.tag import TagOptions, tag_entries, tag_settings  # tag.py dispatches --watch here

    options = PipelineOptions(argv)
    catalogue_options = options.view_as(CatalogueOptions)
    tag_options = options.view_as(TagOptions)
    watch_options = options.view_as(WatchOptions)
    catalogue_options.require_paths()
    if not tag_options.model:
        raise ValueError("missing required flag: --model")
    if watch_options.poll_interval <= 0 or watch_options.window <= 0 or watch_options.max_per_poll < 1:
        raise ValueError("--poll-interval, --window and --max-per-poll must be positive")
    check_watchable(catalogue_options.input)
    prism_path = _prism_for(options)  # None when the flags name another runner
    model_dir = presets.resolve_model(tag_options.model)
    assets = read_model_assets(model_dir)
    output = catalogue_options.output.rstrip("/")
    _prepare_output(output, overwrite=catalogue_options.overwrite)
    if watch_options.db:
        _catch_up(output, watch_options.db)
    options.view_as(StandardOptions).streaming = True

    session = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
    control = pathlib.Path(tempfile.mkdtemp(prefix="cattag-watch-"))
    stop_file = str(control / "stop")
    events_dir = str(control / "events") if prism_path or runs_on_this_machine(options) else None
    if events_dir:
        os.mkdir(events_dir)
    settings = tag_settings(assets, tag_options, tagged_at=None)  # None: each row's own time of tagging
    schema = tags.tags_schema(labels=settings.labels, embedding_dim=settings.embedding_dim,
                              model_version=settings.model_version, feature_version=settings.feature_version)
    stable_s = watch_options.stable_after if watch_options.stable_after is not None else watch_options.poll_interval

    source = PollCatalogue(catalogue_options.input, poll_interval_s=watch_options.poll_interval, stable_s=stable_s,
                           stop_file=stop_file, events_dir=events_dir, max_per_poll=watch_options.max_per_poll)
    writer = WriteWindow(output, session, schema, watch_options.db, events_dir)
    _LOG.info("watch: %s every %.1f s (files unmodified for %.1f s), model %s -> %s%s; Ctrl-C or SIGTERM stops it",
              catalogue_options.input, watch_options.poll_interval, stable_s, assets.model_version, output,
              f" and {redact(watch_options.db)}" if watch_options.db else "")
    started = time.monotonic()
    status = _Status(events_dir)
    try:
        with (prism.PrismServer(prism_path, control / "prism.log") if prism_path
              else contextlib.nullcontext()) as server:
            if server:  # our own Prism: see PrismServer for why not Beam's
                options.view_as(StandardOptions).runner = "PortableRunner"
                options.view_as(PortableOptions).job_endpoint = server.endpoint
                options.view_as(PortableOptions).environment_type = "LOOPBACK"
            pipeline = make_pipeline(options)
            rows, failures = _build(
                pipeline, source, SkipUnchanged(output, settings.model_version, events_dir),
                window_s=watch_options.window,
                tag=lambda entries: tag_entries(
                    entries, model_dir=model_dir, settings=settings, cfg=assets.cfg,
                    policy=catalogue_options.segment_policy(), inference_batch_size=tag_options.inference_batch_size,
                    inference_threads=tag_options.inference_threads))
            _ = (
                (rows | "Rows" >> beam.Map(lambda row: (None, ("row", row))),
                 failures | "Failures" >> beam.Map(lambda failure: (None, ("failure", failure))))
                | "Outcomes" >> beam.Flatten()
                | "ByWindow" >> beam.GroupByKey()
                | "WriteWindow" >> beam.ParDo(writer)
            )
            state = _run_until_stopped(pipeline, stop_file, status, stop_timeout_s=watch_options.stop_timeout,
                                       status_every_s=watch_options.status_every)
            _quiet_worker_shutdown()
        status.update()  # what the drain wrote, before its folder goes
    finally:
        shutil.rmtree(control, ignore_errors=True)
    result = WatchRun(output=output, model_version=assets.model_version, emitted=status.emitted,
                      tagged=status.tagged, failed=status.failed, skipped=status.skipped,
                      wall_s=time.monotonic() - started, state=state)
    _LOG.info("watch stopped (%s): %d files seen complete, %d tagged, %d failed, %d unchanged since tagged, "
              "in %.0f s -> %s", state, result.emitted, result.tagged, result.failed, result.skipped, result.wall_s,
              output)
    return result


def _build(pipeline: beam.Pipeline, source: PollCatalogue, skip: SkipUnchanged, *, window_s: float, tag):
    """The watch's steps up to its windowed outcomes: (tag rows, failures of every stage)."""
    read = (
        pipeline
        | "Start" >> beam.Impulse()
        | "PollCatalogue" >> beam.ParDo(source)
        | "Fingerprint" >> beam.ParDo(FingerprintInputs()).with_outputs(FingerprintInputs.FAILED, main="entries")
    )
    entries = (
        read.entries
        | "ByTrack" >> beam.Map(lambda entry: (entry.track_id, entry)).with_output_types(
            tuple[str, CatalogueEntry])  # a str key: a deterministic coder for the state
        | "SkipUnchanged" >> beam.ParDo(skip)
        | "Windows" >> beam.WindowInto(window.FixedWindows(window_s))
    )
    rows, failures = tag(entries)
    read_failures = read[FingerprintInputs.FAILED] | "FailureWindows" >> beam.WindowInto(
        window.FixedWindows(window_s))
    return rows, (read_failures, *failures) | "AllFailures" >> beam.Flatten()


class WriteWindow(beam.DoFn):
    """(None, [("row", row) | ("failure", Failure)]) of one window -> its Parquet files and DB upsert."""

    def __init__(self, output: str, session: str, schema: pa.Schema, db_url: str | None, events_dir: str | None):
        self._output = output
        self._session = session
        self._schema = schema
        self._db_url = db_url
        self._events_dir = events_dir

    def setup(self) -> None:
        self._events = EventLog(self._events_dir) if self._events_dir else None

    def process(self, keyed, window=beam.DoFn.WindowParam) -> Iterator[str]:
        _, outcomes = keyed
        latest: dict[str, dict] = {}
        failures: list[Failure] = []
        for kind, value in outcomes:
            if kind == "row":
                held = latest.get(value["track_id"])
                if held is None or value["tagged_at"] >= held["tagged_at"]:  # replaced twice in one window
                    latest[value["track_id"]] = value
            else:
                failures.append(value)
        name = f"{self._session}-{window.start.to_utc_datetime():%Y%m%dT%H%M%S.%f}"[:-3]
        written = []
        if latest:
            path = FileSystems.join(self._output, f"{WATCH_PREFIX}-{name}.parquet")
            rows = [latest[track_id] for track_id in sorted(latest)]
            _write_atomically(pa.Table.from_pylist(rows, schema=self._schema), path)
            if self._db_url:
                _upsert(self._db_url, path)
            now = time.time()
            for row in rows:
                modified = _mtime(row["uri"])
                if modified is not None:
                    LATENCY_MS.update(int(max(0.0, now - modified) * 1000))
            WATCH_TAGGED.inc(len(rows))
            written.append(path)
        if failures:
            path = FileSystems.join(self._output, ERRORS_DIR, f"watch-{name}.parquet")
            failures.sort(key=lambda f: (f.track_id, f.stage))
            _write_atomically(pa.Table.from_pylist([f.to_row() for f in failures], schema=ERRORS_SCHEMA), path)
            WATCH_FAILED.inc(len(failures))
            written.append(path)
        if self._events:
            self._events.write({"tagged": sorted(latest), "failed": sorted({f.track_id for f in failures})})
        yield from written


def _write_atomically(table: pa.Table, path: str) -> None:
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


def _upsert(db_url: str, path: str) -> None:
    """`cattag load` of one file; waits out another writer's lock (DuckDB allows one) for a while."""
    deadline = time.monotonic() + _DB_RETRY_S
    delay = 0.1
    while True:
        try:
            database = connect(db_url)
            try:
                database.load([path])
            finally:
                database.close()
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


class _Status:
    """The launcher's running figures, from the workers' event files (when they run on this machine)."""

    def __init__(self, events_dir: str | None):
        self._reader = EventReader(events_dir) if events_dir else None
        self.files = self.waiting = self.queued = self.emitted = self.tagged = self.failed = self.skipped = 0
        self._pending: dict[str, float] = {}  # track id -> when its file was complete (mtime)

    def update(self) -> None:
        if not self._reader:
            return
        for event in self._reader.read():
            if "poll" in event:
                self.files, self.waiting, self.queued = event["files"], event["waiting"], event.get("queued", 0)
                for track_id, modified in event["emitted"]:
                    self._pending[track_id] = modified
                    self.emitted += 1
            for key in ("tagged", "failed", "skipped"):
                for track_id in event.get(key, ()):
                    self._pending.pop(track_id, None)
                    setattr(self, key, getattr(self, key) + 1)

    def line(self) -> str:
        if not self._reader:
            return "watch: running (figures: the runner's Beam metrics, cattag namespace)"
        lag = time.time() - min(self._pending.values()) if self._pending else 0.0
        return (f"watch: {self.files} files, {self.emitted} seen complete, {self.tagged} tagged, {self.failed} failed, "
                f"{self.skipped} unchanged, {len(self._pending)} in flight (oldest {lag:.1f} s), "
                f"{self.queued} queued, {self.waiting} being written")


def _run_until_stopped(pipeline: beam.Pipeline, stop_file: str, status: _Status, *, stop_timeout_s: float,
                       status_every_s: float) -> str:
    """Runs the job; the first SIGINT/SIGTERM asks the source to stop (a drain), a second one, or the
    drain outlasting `stop_timeout_s`, cancels. Returns the job's final state."""
    stopping = threading.Event()
    signals = {"count": 0}

    def on_signal(signum, _frame):
        signals["count"] += 1
        pathlib.Path(stop_file).touch()
        stopping.set()
        if signals["count"] == 1:
            _LOG.info("watch: %s: finishing what is in flight, then stopping (again to cancel now)",
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
        stop_deadline = None
        while not finished.wait(0.5):
            status.update()
            if time.monotonic() - last_status >= status_every_s:
                _LOG.info("%s", status.line())
                last_status = time.monotonic()
            if stopping.is_set() and stop_deadline is None:
                stop_deadline = time.monotonic() + stop_timeout_s
            if stop_deadline is not None and (signals["count"] > 1 or time.monotonic() > stop_deadline):
                _LOG.warning("watch: cancelling the job (%s)", "second signal" if signals["count"] > 1
                             else f"the stop took over {stop_timeout_s:.0f} s")
                result.cancel()
                finished.wait(30)
                return "CANCELLED"
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if "error" in outcome:
        raise outcome["error"]
    return str(outcome.get("state"))


def _quiet_worker_shutdown() -> None:
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


def _prepare_output(output: str, *, overwrite: bool) -> None:
    """A watch adds to OUT (what it holds is skipped by content); _errors/ describes this session."""
    if overwrite:
        held = FileSystems.match([FileSystems.join(output, tags.TAGS_GLOB)])[0].metadata_list
        if held:
            FileSystems.delete([m.path for m in held])
    errors_dir = FileSystems.join(output, ERRORS_DIR)
    if FileSystems.exists(errors_dir):
        FileSystems.delete([errors_dir])
    if not FileSystems.exists(output):
        FileSystems.mkdirs(output)


def _catch_up(output: str, db_url: str) -> None:
    """Loads what OUT already holds into the database (idempotent): rows written by a session whose
    database upsert failed, or before --db was given, reach it now."""
    files = sorted(m.path for m in FileSystems.match([FileSystems.join(output, tags.TAGS_GLOB)])[0].metadata_list)
    if files:
        database = connect(db_url)
        try:
            loaded = database.load(files)
        finally:
            database.close()
        _LOG.info("watch: %d rows already in %s loaded into %s", loaded.rows, output, redact(db_url))


def _prism_for(options: PipelineOptions) -> pathlib.Path | None:
    """The Prism binary to run the watch on, or None when the flags name another runner (Flink...)."""
    standard = options.view_as(StandardOptions)
    if standard.runner not in (None, "DirectRunner", "PrismRunner"):
        return None
    return prism.binary(options.get_all_options().get("prism_location"))
