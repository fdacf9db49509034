"""cattag tag: a catalogue + an exported model -> per-track genre tags and embeddings in Parquet.

    ListCatalogue -> FanOutDecode -> Fingerprint -> [skip tracks OUT holds for this model]
        -> [ReuseCopies: copies of held tracks take their tags] --------------------------------.
        -> TagEntries (FeaturizeTracks, TagTracks: RunInference, aggregate per track)           |
        -> [FindCopies: copies within the run share a recording id]
        -> [LinkHeldCopies: --skip-existing, copies of held tracks join their recordings] -> WriteTags (OUT/tags-<run>-*.parquet)
        '-> failures (+ rejected) -> WriteErrors (OUT/_errors/*.parquet)

The feature config comes from the model, and the audio goes through the same FeaturizeTracks as
in featurize: the model sees exactly the log-mels it was trained on. With --watch the same plan
and the same TagEntries run behind a polled folder instead (pipelines/watch.py).
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import shutil
import tempfile
import time
import uuid

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines import watch
from pipelines.options import CatalogueOptions
from pipelines.tag_plan import TagOptions, TagPlan, WatchOptions
from runners.pipeline import make_pipeline, progress_is_local
from schemas.failure import ERRORS_SCHEMA, Failure
from schemas.tag_output import RunRecord, TagOutput, read_tables
from transforms import counters
from transforms.duplicate_steps import FindCopies
from transforms.link_copies import LinkHeldCopies
from transforms.fingerprint import FingerprintInputs, SkipHeld
from transforms.listing import ListCatalogue, ListingPlan, plan_listing
from transforms.parquet_shards import WriteToParquetShards
from transforms.progress import ProgressMonitor
from transforms.reuse_copies import REUSED_FROM, ReuseCopies
from transforms.track_health import FlagLoudnessOutliers
from transforms.shards import create_file

_LOG = logging.getLogger(__name__)


PASSES_BEAM_FLAGS = True
OPTIONS = (CatalogueOptions, TagOptions, WatchOptions)  # for `cattag tag --help`


@dataclasses.dataclass(frozen=True)
class TagRun:
    """What one run did, for the closing summary and for callers (the demo, the benchmark)."""

    output: str
    model_version: str
    inputs: int
    skipped: int
    tagged: int
    low_confidence: int
    failed: int
    reused: int  # rows that took a held copy's tags (--reuse-duplicates) instead of running the model
    audio_s: float
    wall_s: float
    files: list[str]

    def summary_line(self) -> str:
        rate = self.tagged / max(self.wall_s, 1e-9)
        reused = f" ({self.reused} by reusing the tags of a copy already tagged)" if self.reused else ""
        return (f"tag done: {self.inputs} inputs, {self.tagged} tagged{reused}, {self.low_confidence} low confidence, "
                f"{self.failed} failed, {self.skipped} skipped as already tagged, {self.audio_s / 3600:.2f} audio "
                f"hours in {self.wall_s:.1f} s ({rate:.2f} tracks/s, {self.audio_s / max(self.wall_s, 1e-9):.1f} "
                f"audio-s/s) with model {self.model_version} -> {self.output}")


def run(argv: list[str] | None = None, test_pipeline: beam.Pipeline | None = None) -> TagRun | watch.WatchRun:
    options = PipelineOptions(argv)
    if options.view_as(WatchOptions).watch:
        return watch.run(argv)
    if options.view_as(WatchOptions).db:
        raise ValueError("--db goes with --watch; after a batch run, `cattag load --tags OUT --db URL` loads it")
    catalogue_options = options.view_as(CatalogueOptions)
    tag_options = options.view_as(TagOptions)
    tagged_at = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    tag_plan = TagPlan.from_options(options, tagged_at=tagged_at)
    output = tag_plan.output

    plan = plan_listing(tag_plan.source, labels="none")  # checks the source; the workers list it
    skip_held = output.prepare_batch(skip_existing=tag_options.skip_existing, overwrite=catalogue_options.overwrite)
    if tag_plan.reuse_duplicates and not skip_held:
        _LOG.info("tag: --reuse-duplicates: %s holds no tags yet, so there is nothing to reuse", output.path)
    run_id = tagged_at.strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
    _LOG.info("tag: %s (%s), model %s, feature config %s -> %s%s", plan.source,
              f"{plan.total} inputs" if plan.total is not None else "listed by the workers",
              tag_plan.model_version, tag_plan.assets.cfg.version, output.path,
              " (skipping what it already holds with the same content)" if skip_held else "")

    local_progress = progress_is_local(options, catalogue_options.progress)
    progress_dir = tempfile.mkdtemp(prefix="cattag-progress-") if local_progress else None
    pipeline = test_pipeline or make_pipeline(options)
    build(pipeline, plan, tag_plan, run_id=run_id, skip_held=skip_held, progress_dir=progress_dir)
    started = time.monotonic()
    try:
        if progress_dir:
            with ProgressMonitor(progress_dir, total=plan.total, label="tag"):
                result = pipeline.run()
                result.wait_until_finish()
        else:
            result = pipeline.run()
            result.wait_until_finish()
    finally:
        if progress_dir:
            shutil.rmtree(progress_dir, ignore_errors=True)
    wall_s = time.monotonic() - started

    files = output.run_files(run_id)
    written = read_tables(files, ["low_confidence", "duration_s", REUSED_FROM])
    errors = output.count_errors()
    tagged = written.num_rows if written else 0
    skipped = counters.committed(result, counters.SKIPPED_AS_HELD)
    listed = counters.committed(result, counters.INPUTS_LISTED)
    # Every input is tagged, failed or skipped as held; a runner that reports no metrics leaves one unknown.
    inputs = listed if listed is not None else tagged + errors + (skipped or 0)
    result = TagRun(
        output=output.path, model_version=tag_plan.model_version, inputs=inputs,
        skipped=inputs - tagged - errors,  # every input is tagged, failed or skipped as held
        tagged=tagged,
        low_confidence=int(written["low_confidence"].to_numpy().sum()) if written else 0,
        failed=errors, reused=int(written[REUSED_FROM].is_valid().to_numpy(zero_copy_only=False).sum()) if written else 0,
        audio_s=float(written["duration_s"].to_numpy().sum()) if written else 0.0,
        wall_s=wall_s, files=files)
    _record_run(output, run_id, result)
    _LOG.info("%s", result.summary_line())
    return result


def _record_run(output: TagOutput, run_id: str, result: TagRun) -> None:
    """OUT/_runs/<run id>.json: what the run did, for `cattag report` (readers skip `_` folders)."""
    record = RunRecord(run_id=run_id, **{k: v for k, v in dataclasses.asdict(result).items() if k != "files"},
                       files=len(result.files))
    with create_file(output.run_record_path(run_id), output.runs_dir) as handle:
        handle.write(record.to_json().encode())


def build(pipeline: beam.Pipeline, plan: ListingPlan, tag_plan: TagPlan, *, run_id: str, skip_held: bool = False,
          progress_dir: str | None = None) -> beam.PCollection:
    """Adds the tag steps to `pipeline`; returns its rows."""
    output = tag_plan.output
    listed = pipeline | "ListCatalogue" >> ListCatalogue(plan, labels="none")
    entries = listed["entries"] | "FanOutDecode" >> beam.Reshuffle()
    read = entries | "Fingerprint" >> beam.ParDo(FingerprintInputs()).with_outputs(
        FingerprintInputs.FAILED, main="entries")
    todo = read.entries
    reused = None
    if skip_held:
        todo = todo | "SkipHeld" >> SkipHeld(output.path, tag_plan.model_version)
        if tag_plan.reuse_duplicates:
            settings = tag_plan.settings
            reuse = todo | "ReuseCopies" >> ReuseCopies(
                output.path, tag_plan.model_version, tag_plan.schema.names, tagged_at=settings.tagged_at,
                sample_rate_hz=tag_plan.assets.cfg.sample_rate_hz, max_track_s=tag_plan.policy.max_track_s,
                health=settings.health, loudness=settings.descriptors, thresholds=settings.health_thresholds)
            todo, reused = reuse["todo"], reuse["reused"]
    tagged = todo | "TagEntries" >> tag_plan.tag_entries(progress_dir)
    rows = tagged["rows"]
    if tag_plan.settings.health:  # copies of one recording, by their fingerprints, across the run
        rows = rows | "FindCopies" >> FindCopies(output.path)
        # ... and across runs: ReuseCopies has matched this model's held rows already.
        if skip_held and tag_plan.link_duplicates and not tag_plan.reuse_duplicates:
            rows = rows | "LinkHeldCopies" >> LinkHeldCopies(output.tag_files(), output.path)
    if reused is not None:  # they keep the recording ids of the copies they reused
        rows = (rows, reused) | "WithReused" >> beam.Flatten()
    if tag_plan.settings.health and tag_plan.settings.descriptors:  # loudness far from the rest of the run
        rows = rows | "FlagLoudnessOutliers" >> FlagLoudnessOutliers(tag_plan.settings.health_thresholds)
    _ = rows | "WriteTags" >> WriteToParquetShards(output.run_prefix(run_id), tag_plan.schema,
                                                   file_name_suffix=".parquet")
    _ = (
        (read[FingerprintInputs.FAILED], tagged["failures"], listed["rejected"])
        | "AllFailures" >> beam.Flatten()
        | "FailureRows" >> beam.Map(Failure.to_row)
        | "WriteErrors" >> WriteToParquetShards(output.errors_prefix(), ERRORS_SCHEMA)
    )
    return rows


def read_tags(output: str, columns: list[str] | None = None):
    """All tag rows in `output` (every run, every model version) as one Arrow table, or None."""
    return TagOutput(output).read_tags(columns)
