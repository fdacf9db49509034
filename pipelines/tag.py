"""cattag tag: a catalogue + an exported model -> per-track genre tags and embeddings in Parquet.

    ListCatalogue -> [skip tracks OUT holds for this model] -> FanOutDecode -> FeaturizeTracks
        -> TagTracks (RunInference, aggregate per track) -> WriteTags (OUT/tags-<run>-*.parquet)
        '-> failures (+ rejected) -> WriteErrors (OUT/_errors/*.parquet)

The feature config comes from the model, and the audio goes through the same FeaturizeTracks as
in featurize: the model sees exactly the log-mels it was trained on.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import shutil
import tempfile
import time
import uuid

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines import watch
from pipelines.options import CatalogueOptions
from pipelines.watch import WatchOptions
from runners.pipeline import make_pipeline, progress_is_local
from schemas import presets, tags
from schemas.failure import ERRORS_DIR, ERRORS_SCHEMA, Failure
from schemas.model_assets import read_model_assets
from transforms import aggregate, featurize_steps
from transforms.fingerprint import FingerprintInputs, SkipHeld
from transforms.inference import DEFAULT_BATCH_SIZE
from transforms.listing import ListCatalogue, ListingPlan, plan_listing
from transforms.parquet_shards import WriteToParquetShards
from transforms.progress import ProgressMonitor
from transforms.shards import create_file
from transforms.tagging import TagSettings, TagTracks

_LOG = logging.getLogger(__name__)


class TagOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        defaults = aggregate.ConfidencePolicy()
        parser.add_argument("--model", help="a `cattag train` model directory (SavedModel with its assets), or a "
                                            "pretrained name from `cattag pretrained list` (musicnn-msd, musicnn-mtt)")
        parser.add_argument("--top-k", type=int, default=3, help="labels with scores kept per track (default %(default)s)")
        parser.add_argument("--min-confidence", type=float, default=defaults.min_confidence,
                            help="tracks whose top score is below this are flagged low_confidence "
                                 "(default %(default)s)")
        parser.add_argument("--min-margin", type=float, default=defaults.min_margin,
                            help="... or whose runner-up is within this of the top score (default %(default)s)")
        parser.add_argument("--tag-threshold", type=float, default=None,
                            help="multi-label models (musicnn): a track carries every tag scoring at least this; "
                                 "default: each tag's threshold from the model card "
                                 f"({aggregate.DEFAULT_TAG_THRESHOLD} for the pretrained presets)")
        parser.add_argument("--aggregate", choices=aggregate.AGGREGATIONS, default="mean",
                            help="segments -> track: mean probability, max probability or majority vote "
                                 "(default %(default)s)")
        parser.add_argument("--inference-batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                            help="segments per model call (default %(default)s: on CPU as fast as 64 and about 1.4 GB "
                                 "less per worker with musicnn; raise it on a GPU)")
        parser.add_argument("--inference-threads", type=int, default=0,
                            help="TensorFlow intra-op threads per worker process for the model; 0: TensorFlow's "
                                 "choice, which measured faster than one each for 2 local workers on 2 cores "
                                 "(default %(default)s)")
        parser.add_argument("--skip-existing", action="store_true",
                            help="tag only inputs that --output does not already hold for this model version; "
                                 "rerunning a command with it adds no duplicate rows")


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
    audio_s: float
    wall_s: float
    files: list[str]

    def summary_line(self) -> str:
        rate = self.tagged / max(self.wall_s, 1e-9)
        return (f"tag done: {self.inputs} inputs, {self.tagged} tagged ({self.low_confidence} low confidence), "
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
    catalogue_options.require_paths()
    if not tag_options.model:
        raise ValueError("missing required flag: --model")
    if tag_options.top_k < 1:
        raise ValueError(f"--top-k {tag_options.top_k}: expected at least 1")
    if tag_options.skip_existing and catalogue_options.overwrite:
        raise ValueError("--skip-existing keeps earlier tags and --overwrite deletes them: choose one")
    if tag_options.tag_threshold is not None and not 0.0 <= tag_options.tag_threshold <= 1.0:
        raise ValueError(f"--tag-threshold {tag_options.tag_threshold}: expected a score between 0 and 1")
    model_dir = presets.resolve_model(tag_options.model)
    assets = read_model_assets(model_dir)  # refuses a model whose feature config we cannot reproduce
    policy = catalogue_options.segment_policy()
    output = catalogue_options.output.rstrip("/")

    plan = plan_listing(catalogue_options.input, labels="none")  # checks the source; the workers list it
    held_in = _prepare_output(output, skip_existing=tag_options.skip_existing, overwrite=catalogue_options.overwrite)
    settings = tag_settings(assets, tag_options, tagged_at=datetime.datetime.now(datetime.UTC).replace(microsecond=0))
    run_id = settings.tagged_at.strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
    _LOG.info("tag: %s (%s), model %s, feature config %s -> %s%s", plan.source,
              f"{plan.total} inputs" if plan.total is not None else "listed by the workers",
              assets.model_version, assets.cfg.version, output,
              " (skipping what it already holds with the same content)" if held_in else "")

    local_progress = progress_is_local(options, catalogue_options.progress)
    progress_dir = tempfile.mkdtemp(prefix="cattag-progress-") if local_progress else None
    pipeline = test_pipeline or make_pipeline(options)
    build(pipeline, plan, output=output, run_id=run_id, skip_held_in=held_in, model_dir=model_dir, settings=settings, cfg=assets.cfg, policy=policy,
          inference_batch_size=tag_options.inference_batch_size, inference_threads=tag_options.inference_threads,
          progress_dir=progress_dir)
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

    files = _match(FileSystems.join(output, f"{tags.TAGS_PREFIX}-{run_id}-*.parquet"))
    written = _read_tables(files, ["low_confidence", "duration_s"])
    errors = _read_errors(output)
    tagged = written.num_rows if written else 0
    skipped = _counter(result, "inputs_skipped_as_held")
    listed = _counter(result, "inputs_listed")
    # Every input is tagged, failed or skipped as held; a runner that reports no metrics leaves one unknown.
    inputs = listed if listed is not None else tagged + errors + (skipped or 0)
    result = TagRun(
        output=output, model_version=assets.model_version, inputs=inputs,
        skipped=inputs - tagged - errors,  # every input is tagged, failed or skipped as held
        tagged=tagged,
        low_confidence=int(written["low_confidence"].to_numpy().sum()) if written else 0,
        failed=errors, audio_s=float(written["duration_s"].to_numpy().sum()) if written else 0.0,
        wall_s=wall_s, files=files)
    _record_run(output, run_id, result)
    _LOG.info("%s", result.summary_line())
    return result


def _record_run(output: str, run_id: str, result: TagRun) -> None:
    """OUT/_runs/<run id>.json: what the run did, for `cattag report` (readers skip `_` folders)."""
    record = {"run_id": run_id, **{k: v for k, v in dataclasses.asdict(result).items() if k != "files"},
              "files": len(result.files)}
    folder = FileSystems.join(output, tags.RUNS_DIR)
    with create_file(FileSystems.join(folder, f"{run_id}.json"), folder) as handle:
        handle.write(json.dumps(record, indent=2).encode())


def build(
    pipeline: beam.Pipeline, plan: ListingPlan, *, output: str, run_id: str, model_dir: str,
    settings: TagSettings, cfg, policy, inference_batch_size: int = DEFAULT_BATCH_SIZE, inference_threads: int = 0,
    progress_dir: str | None = None, skip_held_in: str | None = None,
) -> dict[str, beam.PCollection]:
    """Adds the tag steps to `pipeline`; returns its rows and failures."""
    listed = pipeline | "ListCatalogue" >> ListCatalogue(plan, labels="none")
    entries = listed["entries"] | "FanOutDecode" >> beam.Reshuffle()
    read = entries | "Fingerprint" >> beam.ParDo(FingerprintInputs()).with_outputs(
        FingerprintInputs.FAILED, main="entries")
    todo = read.entries
    if skip_held_in:
        todo = todo | "SkipHeld" >> SkipHeld(skip_held_in, settings.model_version)
    tagged, failures = tag_entries(todo, model_dir=model_dir, settings=settings, cfg=cfg, policy=policy,
                                   inference_batch_size=inference_batch_size, inference_threads=inference_threads,
                                   progress_dir=progress_dir)
    schema = tags.tags_schema(labels=settings.labels, embedding_dim=settings.embedding_dim,
                              model_version=settings.model_version, feature_version=settings.feature_version)
    _ = tagged | "WriteTags" >> WriteToParquetShards(
        FileSystems.join(output, f"{tags.TAGS_PREFIX}-{run_id}"), schema, file_name_suffix=".parquet")

    _ = (
        (read[FingerprintInputs.FAILED], *failures, listed["rejected"])
        | "AllFailures" >> beam.Flatten()
        | "FailureRows" >> beam.Map(Failure.to_row)
        | "WriteErrors" >> WriteToParquetShards(FileSystems.join(output, ERRORS_DIR, "part"), ERRORS_SCHEMA)
    )
    return tagged


def tag_settings(assets, tag_options: TagOptions, *, tagged_at: datetime.datetime | None) -> TagSettings:
    """What every row shares, from the model's assets and the flags (batch and watch alike)."""
    return TagSettings(
        labels=tuple(assets.labels), embedding_dim=_embedding_dim(assets.card), model_version=assets.model_version,
        feature_version=assets.cfg.version, tagged_at=tagged_at, aggregation=tag_options.aggregate,
        top_k=tag_options.top_k,
        policy=aggregate.ConfidencePolicy(
            tag_options.min_confidence, tag_options.min_margin,
            aggregate.Typicality.from_dict(assets.typicality) if assets.typicality else None),
        multilabel=aggregate.MultiLabel.from_card(assets.card, assets.labels, threshold=tag_options.tag_threshold)
        if assets.card.get("task") == aggregate.MULTILABEL else None)


def tag_entries(entries: beam.PCollection, *, model_dir: str, settings: TagSettings, cfg, policy,
                inference_batch_size: int = DEFAULT_BATCH_SIZE, inference_threads: int = 0, progress_dir: str | None = None,
                ) -> tuple[beam.PCollection, tuple[beam.PCollection, ...]]:
    """Fingerprinted CatalogueEntry -> (tag rows, failures of each stage): the steps batch and watch share."""
    features = entries | "FeaturizeTracks" >> featurize_steps.FeaturizeTracks(cfg, policy, progress_dir,
                                                                     keep_silent_tracks=True)
    tagged = features | "TagTracks" >> TagTracks(model_dir, settings, inference_batch_size=inference_batch_size,
                                                 inference_threads=inference_threads)
    return tagged["rows"], (features["failures"], tagged["failures"])


def read_tags(output: str, columns: list[str] | None = None):
    """All tag rows in `output` (every run, every model version) as one Arrow table, or None."""
    return _read_tables(_tag_files(output), columns)


def _read_tables(paths: list[str], columns: list[str] | None) -> pa.Table | None:
    if not paths:
        return None
    tables = []
    for path in paths:
        with FileSystems.open(path) as handle:
            tables.append(pq.read_table(handle, columns=columns))
    return pa.concat_tables(tables)


def _tag_files(output: str) -> list[str]:
    return _match(FileSystems.join(output, tags.TAGS_GLOB))


def _match(pattern: str) -> list[str]:
    return sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)


def _prepare_output(output: str, *, skip_existing: bool, overwrite: bool) -> str | None:
    """Checks OUT against the flags; returns OUT when the run should skip what it holds (--skip-existing).
    What it holds is read by the workers (an anti-join, fingerprint.SkipHeld), not here."""
    files = _tag_files(output)
    errors_dir = FileSystems.join(output, ERRORS_DIR)
    if files and not (skip_existing or overwrite):
        raise ValueError(f"--output {output} already holds tags from an earlier run ({len(files)} file(s)); "
                         "pass --skip-existing to add only what is missing, or --overwrite to replace them")
    # _errors/ always describes the latest run: the inputs that failed before are retried now.
    if FileSystems.exists(errors_dir):
        FileSystems.delete([errors_dir])
    if overwrite:
        if files:
            FileSystems.delete(files)
        runs_dir = FileSystems.join(output, tags.RUNS_DIR)
        if FileSystems.exists(runs_dir):  # the records of the runs whose files are gone
            FileSystems.delete([runs_dir])
        return None
    return output if skip_existing and files else None


def _read_errors(output: str) -> int:
    table = _read_tables(_match(FileSystems.join(output, ERRORS_DIR, "*.parquet")), ["uri"])
    return table.num_rows if table is not None else 0


def _counter(result, name: str) -> int | None:
    """A cattag counter's committed value from a finished job, or None when the runner reports none."""
    try:
        found = result.metrics().query(MetricsFilter().with_namespace("cattag").with_name(name))["counters"]
    except (NotImplementedError, AttributeError, KeyError, ValueError):
        return None
    return sum(c.committed or 0 for c in found) if found else None


def _embedding_dim(card: dict) -> int:
    dim = card.get("embedding_dim")
    if not isinstance(dim, int) or dim < 1:
        raise ValueError("the model card has no embedding_dim; export the model again with this cattag")
    return dim
