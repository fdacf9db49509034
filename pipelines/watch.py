"""cattag tag --watch: a long-running streaming job that keeps a growing catalogue tagged.

    PollCatalogue (every --poll-interval; complete files only) -> Fingerprint -> SkipUnchanged (state per
        track id) -> FixedWindows(--window) -> TagEntries (the batch run's: FeaturizeTracks, TagTracks)
        -> WriteWindows (transforms/watch_sink.py)
        -> per window: OUT/tags-watch-<session>-<window>.parquet, OUT/_errors/watch-<session>-<window>.parquet,
           and an upsert of the window's rows into --db

It runs on Beam's Prism runner by default (`make prism` builds it) and on Flink by flags. SIGINT or
SIGTERM stops it cleanly: the source stops polling, every open window is tagged and written, and
the job ends; a second signal cancels at once. Starting the same command again tags only what is
new or changed since (content fingerprints), so rows are neither lost nor duplicated.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import pathlib
import shutil
import tempfile
import time
import uuid

import apache_beam as beam
from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions, StandardOptions
from apache_beam.transforms import window

from database import connect, redact
from pipelines.options import CatalogueOptions
from pipelines.tag_plan import TagPlan, WatchOptions
from runners import prism, streaming
from runners.pipeline import make_pipeline, workers_share_this_disk
from schemas.tag_output import TagOutput
from transforms.catalogue import CatalogueEntry
from transforms.fingerprint import FingerprintInputs, SkipUnchanged, keyed_by_track
from transforms.progress import EventReader
from transforms.watch import PollCatalogue, check_watchable
from transforms.watch_sink import COPIES_HELD, COPIES_OFF, COPIES_WINDOW, WriteWindows

_LOG = logging.getLogger(__name__)


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


def _cluster_job_cancel(options: PipelineOptions, session: str):
    """On a Flink cluster: names the job after the session and returns what cancels it over the cluster's REST
    API (runners.flink_cluster.cancel_jobs_named: a job Flink restarted outlives Beam's cancel); else None."""
    from runners import flink_cluster

    master = options.get_all_options().get("flink_master")
    if options.view_as(StandardOptions).runner != "FlinkRunner" or flink_cluster.rest_address(master) is None:
        return None

    named = options.view_as(GoogleCloudOptions)
    named.job_name = named.job_name or f"cattag-watch-{session}"
    return lambda: flink_cluster.cancel_jobs_named(master, named.job_name)


def run(argv: list[str] | None = None) -> WatchRun:
    options = PipelineOptions(argv)
    watch_options = options.view_as(WatchOptions)
    plan = TagPlan.from_options(options, tagged_at=None)  # None: each row's own time of tagging
    if watch_options.poll_interval <= 0 or watch_options.window <= 0 or watch_options.max_per_poll < 1:
        raise ValueError("--poll-interval, --window and --max-per-poll must be positive")
    check_watchable(plan.source)
    prism_path = prism.binary_for(options)  # None when the flags name another runner
    output = plan.output
    output.prepare_watch(overwrite=options.view_as(CatalogueOptions).overwrite)
    if watch_options.db:
        _catch_up(output, watch_options.db)
    options.view_as(StandardOptions).streaming = True

    session = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
    control = pathlib.Path(tempfile.mkdtemp(prefix="cattag-watch-"))
    stop_file = str(control / "stop")
    events_dir = str(control / "events") if prism_path or workers_share_this_disk(options) else None
    if events_dir:
        os.mkdir(events_dir)
    stable_s = watch_options.stable_after if watch_options.stable_after is not None else watch_options.poll_interval
    source = PollCatalogue(plan.source, poll_interval_s=watch_options.poll_interval, stable_s=stable_s,
                           stop_file=stop_file, events_dir=events_dir, max_per_poll=watch_options.max_per_poll)
    _LOG.info("watch: %s every %.1f s (files unmodified for %.1f s), model %s -> %s%s; Ctrl-C or SIGTERM stops it",
              plan.source, watch_options.poll_interval, stable_s, plan.model_version, output.path,
              f" and {redact(watch_options.db)}" if watch_options.db else "")
    started = time.monotonic()
    status = _Status(events_dir)
    try:
        with prism.served(options, prism_path, control / "prism.log"):
            also_cancel = _cluster_job_cancel(options, session)  # names the job: before the pipeline
            pipeline = make_pipeline(options)
            build(pipeline, plan, source, session=session, window_s=watch_options.window, db_url=watch_options.db,
                  events_dir=events_dir)
            state = streaming.run_until_stopped(pipeline, stop_file, status, stop_timeout_s=watch_options.stop_timeout,
                                                status_every_s=watch_options.status_every,
                                                also_cancel=also_cancel)
            streaming.quiet_worker_shutdown()
        status.update()  # what the drain wrote, before its folder goes
    finally:
        shutil.rmtree(control, ignore_errors=True)
    result = WatchRun(output=output.path, model_version=plan.model_version, emitted=status.emitted,
                      tagged=status.tagged, failed=status.failed, skipped=status.skipped,
                      wall_s=time.monotonic() - started, state=state)
    _LOG.info("watch stopped (%s): %d files seen complete, %d tagged, %d failed, %d unchanged since tagged, "
              "in %.0f s -> %s", state, result.emitted, result.tagged, result.failed, result.skipped, result.wall_s,
              output.path)
    return result


def build(pipeline: beam.Pipeline, plan: TagPlan, source: PollCatalogue, *, session: str, window_s: float,
          db_url: str | None, events_dir: str | None) -> beam.PCollection:
    """The watch's steps: polled files -> tag rows and failures per window -> their files and the database."""
    read = (
        pipeline
        | "Start" >> beam.Impulse()
        | "PollCatalogue" >> beam.ParDo(source)
        | "Fingerprint" >> beam.ParDo(FingerprintInputs()).with_outputs(FingerprintInputs.FAILED, main="entries")
    )
    entries = (
        read.entries
        | "ByTrack" >> beam.Map(keyed_by_track).with_output_types(tuple[str, CatalogueEntry])  # deterministic coder
        | "SkipUnchanged" >> beam.ParDo(SkipUnchanged(plan.output.path, plan.model_version, events_dir))
        | "Windows" >> beam.WindowInto(window.FixedWindows(window_s))
    )
    tagged = entries | "TagEntries" >> plan.tag_entries()
    read_failures = read[FingerprintInputs.FAILED] | "FailureWindows" >> beam.WindowInto(
        window.FixedWindows(window_s))
    failures = (read_failures, tagged["failures"]) | "AllFailures" >> beam.Flatten()
    copies = COPIES_OFF
    if plan.settings.health:
        copies = COPIES_HELD if plan.link_duplicates else COPIES_WINDOW
    return {"rows": tagged["rows"], "failures": failures} | "WriteWindows" >> WriteWindows(
        plan.output.path, session, plan.schema, db_url, events_dir, copies)


class _Status:
    """The launcher's running figures, from the workers' event files (when they run on this machine)."""

    def __init__(self, events_dir: str | None):
        self._reader = EventReader(events_dir) if events_dir else None
        self.files = self.waiting = self.queued = self.emitted = self.tagged = self.failed = self.skipped = 0
        self._pending: dict[str, float] = {}  # track id -> when its file was complete (mtime)
        self.source_stopped = False

    def drained(self) -> bool:
        """The source has stopped and every file it emitted is written (tagged, failed or unchanged)."""
        return self.source_stopped and not self._pending

    def update(self) -> None:
        if not self._reader:
            return
        for event in self._reader.read():
            if "poll" in event:
                self.files, self.waiting, self.queued = event["files"], event["waiting"], event.get("queued", 0)
                for track_id, modified in event["emitted"]:
                    self._pending[track_id] = modified
                    self.emitted += 1
            if "stopped" in event:
                self.source_stopped = True
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


def _catch_up(output: TagOutput, db_url: str) -> None:
    """Loads what OUT already holds into the database (idempotent): rows written by a session whose
    database upsert failed, or before --db was given, reach it now."""
    files = output.tag_files()
    if files:
        with connect(db_url) as database:
            loaded = database.load(files)
        _LOG.info("watch: %d rows already in %s loaded into %s", loaded.rows, output.path, redact(db_url))
