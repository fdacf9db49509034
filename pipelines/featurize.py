"""cattag featurize: a catalogue -> sharded gzip TFRecords of log-mel segments.

    ListCatalogue -> FanOutDecode -> FeaturizeTracks -> EncodeExamples (split, record) ---.
                                           |                                            +-> WriteOutputs
                                           |-> failures (+ rejected) -> FailureRows ---'   (train/, validation/,
                                           |                                   ^            test/, _errors/)
                                           |-> fingerprints -> SplitKeysOfCopies -> moves (tracks whose copies
                                           |                                    put them in another split)
    entries, rejected, non-audio, tracks, failures, train mel moments -> Summarize ------> WriteMetadata"""

from __future__ import annotations

import datetime
import logging
import shutil
import tempfile
import time
from importlib import metadata as importlib_metadata

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.options import CatalogueOptions, load_feature_config
from runners.pipeline import make_pipeline, progress_is_local
from schemas import examples
from schemas.failure import ERRORS_DIR, ERRORS_SCHEMA
from schemas.features import DEFAULT_PRESET, PRESETS, FeatureConfig, SegmentPolicy
from schemas.featurize_metadata import METADATA_FILE, FeaturizeMetadata
from transforms import featurize_steps, summaries
from transforms.catalogue import LABEL_MODES
from transforms.duplicate_steps import SplitKeysOfCopies
from transforms.listing import CatalogueFacts, ListCatalogue, ListingPlan, catalogue_facts, plan_listing
from transforms.parquet_shards import ParquetFormat
from transforms.progress import ProgressMonitor
from transforms.shards import Destination, WriteShardsTo
from transforms.splits import parse_proportions
from transforms.tfrecords import GzipTFRecordFormat

_LOG = logging.getLogger(__name__)
_OUTPUT_NAMES = (*examples.SPLITS, ERRORS_DIR, METADATA_FILE, examples.SCHEMA_FILE)


class FeaturizeOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        # `--labels MODE` is accepted too (see _label_flag_alias): Beam's GoogleCloudOptions owns
        # --labels for Dataflow job labels, so the option itself needs another name.
        parser.add_argument("--label-source", dest="label_source", choices=LABEL_MODES, default="auto",
                            help="where labels come from, also spelled --labels MODE: from-dirs (parent folder, "
                                 "GTZAN layout), manifest, none; auto: the manifest's label or genre column if "
                                 "any (default %(default)s)")
        parser.add_argument("--splits", default="80,10,10",
                            help="train,validation,test proportions (default %(default)s)")
        parser.add_argument("--feature-config", default=DEFAULT_PRESET,
                            help=f"a named config ({', '.join(PRESETS)}) or a JSON file of FeatureConfig fields; "
                                 "musicnn is what the default model (a head on the pretrained musicnn backbone) "
                                 "needs, cattag-v1 the 22.05 kHz, 128-band config of the from-scratch models "
                                 "(default %(default)s)")
        parser.add_argument("--group-copies", choices=("on", "off"), default="on",
                            help="keep every copy of one recording (found by its audio fingerprint: re-encoded, "
                                 "louder, resampled, trimmed) in one split, so that no copy of a test track is "
                                 "trained on; off: split by artist or track only (default %(default)s)")


PASSES_BEAM_FLAGS = True  # flags it does not know go to Beam's PipelineOptions
OPTIONS = (CatalogueOptions, FeaturizeOptions)  # for `cattag featurize --help`


def run(argv: list[str] | None = None, test_pipeline: beam.Pipeline | None = None) -> FeaturizeMetadata:
    """Runs featurize and returns the metadata it wrote."""
    options = PipelineOptions(_label_flag_alias(argv))
    catalogue_options = options.view_as(CatalogueOptions)
    featurize_options = options.view_as(FeaturizeOptions)
    catalogue_options.require_paths()
    cfg = load_feature_config(featurize_options.feature_config)
    policy = catalogue_options.segment_policy()
    proportions = parse_proportions(featurize_options.splits)
    output = catalogue_options.output.rstrip("/")

    labels = featurize_options.label_source
    plan = plan_listing(catalogue_options.input, labels=labels)  # checks the source; the workers list it
    facts = catalogue_facts(plan, labels=labels)  # the label vocabulary, streamed: no entry is kept
    _prepare_output(output, overwrite=catalogue_options.overwrite)
    _LOG.info("featurize: %s (%s), %d labels, feature config %s -> %s", plan.source,
              f"{plan.total} inputs" if plan.total is not None else "listed by the workers", len(facts.labels),
              cfg.version, output)

    local_progress = progress_is_local(options, catalogue_options.progress)
    progress_dir = tempfile.mkdtemp(prefix="cattag-progress-") if local_progress else None
    pipeline = test_pipeline or make_pipeline(options)
    build(pipeline, plan, facts, labels=labels, output=output, cfg=cfg, policy=policy, proportions=proportions,
          progress_dir=progress_dir, group_copies=featurize_options.group_copies == "on")

    started = time.monotonic()
    if progress_dir:
        try:
            with ProgressMonitor(progress_dir, total=plan.total, label="featurize"):
                pipeline.run().wait_until_finish()
        finally:
            shutil.rmtree(progress_dir, ignore_errors=True)
    else:
        pipeline.run().wait_until_finish()
    elapsed = time.monotonic() - started

    with FileSystems.open(FileSystems.join(output, METADATA_FILE)) as handle:
        written = FeaturizeMetadata.from_json(handle.read().decode("utf-8"))
    _LOG.info("%s", summary_line(written, elapsed_s=elapsed, output=output))
    return written


def build(
    pipeline: beam.Pipeline,
    plan: ListingPlan,
    facts: CatalogueFacts,
    *,
    labels: str,
    output: str,
    cfg: FeatureConfig,
    policy: SegmentPolicy,
    proportions: tuple[float, float, float],
    progress_dir: str | None = None,
    group_copies: bool = True,
) -> dict[str, beam.PCollection]:
    """Adds the featurize steps to `pipeline`; returns its segments, tracks and failures.

    Few steps on purpose: every stage of the job is a round of bundles on every worker, which a
    small catalogue pays in start-up. So all four outputs go through one writer (WriteShardsTo)
    and every figure of metadata.json through one combine (SummarizeByTag).

    With `group_copies`, the copies of one recording (found by their fingerprints, taken in the same
    decode) share a split key. Examples are written at once in their own key's split (artist or track),
    and those of the few tracks whose copies put them elsewhere are moved once the copies are known
    (WriteShardsTo's moves): the examples never wait for the clustering, so memory stays flat."""
    listed = pipeline | "ListCatalogue" >> ListCatalogue(plan, labels=labels)
    entries = listed["entries"] | "FanOutDecode" >> beam.Reshuffle()  # spreads the inputs over workers
    features = entries | "FeaturizeTracks" >> featurize_steps.FeaturizeTracks(
        cfg, policy, progress_dir, fingerprints=group_copies)
    segments, tracks = features["segments"], features["tracks"]
    mel_moments = segments | "SumMelsByTrack" >> beam.ParDo(featurize_steps.SumMelsByTrack())
    moves = None
    if group_copies:
        artists = tracks | "Artists" >> beam.Map(lambda track: (track.entry.track_id, track.entry.artist))
        keys = beam.pvalue.AsSingleton({"words": features["fingerprints"], "artists": artists}
                                       | "SplitKeysOfCopies" >> SplitKeysOfCopies(output))
        tracks = tracks | "TracksWithCopies" >> beam.Map(featurize_steps.with_copies_key, keys)
        mel_moments = mel_moments | "MomentsWithCopies" >> beam.Map(featurize_steps.with_copies_key, keys)
        moves = beam.pvalue.AsDict(
            tracks
            | "MovedByCopies" >> beam.Filter(lambda track: featurize_steps.moved_by_copies(track.entry, proportions))
            | "Moves" >> beam.Map(lambda track: (track.entry.track_id,
                                                 featurize_steps.split_of_entry(track.entry, proportions))))
    failures = (features["failures"], listed["rejected"]) | "AllFailures" >> beam.Flatten()

    destinations = {split: Destination(GzipTFRecordFormat(), FileSystems.join(output, split, "part"),
                                       examples.TFRECORD_SUFFIX, movable=group_copies) for split in examples.SPLITS}
    destinations[ERRORS_DIR] = Destination(ParquetFormat(ERRORS_SCHEMA),
                                                    FileSystems.join(output, ERRORS_DIR, "part"), ".parquet")
    examples_by_split = segments | "EncodeExamples" >> beam.ParDo(
        featurize_steps.EncodeExample(facts.labels, proportions, keyed=group_copies))
    error_rows = failures | "FailureRows" >> beam.Map(lambda failure: (ERRORS_DIR, failure.to_row()))
    shards = (examples_by_split, error_rows) | "WriteOutputs" >> WriteShardsTo(destinations, moves=moves)

    train = examples.SPLITS[0]
    summary = {
        "entries": listed["entries"],
        "rejected": listed["rejected"],
        "non_audio": listed["non_audio"],
        "tracks": tracks,
        "failures": failures,
        "mel_stats": mel_moments | "TrainTracks" >> beam.Filter(
            lambda track: featurize_steps.split_of_entry(track.entry, proportions) == train),
        **({"copies": tracks} if group_copies else {}),
    } | "Summarize" >> summaries.SummarizeByTag({
        "entries": beam.combiners.CountCombineFn(),
        "rejected": beam.combiners.CountCombineFn(),
        "non_audio": beam.combiners.CountCombineFn(),
        "tracks": summaries.CountTracksFn(proportions),
        "failures": summaries.SummarizeFailuresFn(),
        "mel_stats": summaries.MelStatsFn(),
        **({"copies": summaries.CountCopiesFn(proportions)} if group_copies else {}),
    })
    static = {
        "cattag_version": _version(),
        "created_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "feature_config": cfg.to_dict(),
        "feature_version": cfg.version,
        "segment_policy": policy.to_dict(),
        "labels": list(facts.labels),
        "splits": dict(zip(examples.SPLITS, proportions, strict=True)),
        "split_key": ("recording, then " if group_copies else "") + ("artist" if facts.has_artists else "track_id"),
        "files": {split: f"{split}/part-*{examples.TFRECORD_SUFFIX}" for split in examples.SPLITS},
        "schema": examples.SCHEMA_FILE,
        "errors": f"{ERRORS_DIR}/part-*.parquet",
    }
    # metadata.json is the mark of a complete output: written only once every shard is final, so a
    # run that dies before that leaves none (and the same command then replaces it).
    _ = summary | "WriteMetadata" >> beam.Map(write_metadata, output=output, static=static,
                                              shards=beam.pvalue.AsList(shards))
    return {"segments": segments, "tracks": tracks, "failures": failures}


def write_metadata(figures: dict, *, output: str, static: dict, shards: list[str] = ()) -> None:
    """Writes metadata.json and schema.pbtxt once every figure is known (the summary's output:
    entries, rejected, non_audio, tracks, copies, failures, mel_stats) and every shard written."""
    counts, failed, non_audio = figures["tracks"], figures["failures"], figures["non_audio"]
    totals = {"tracks": 0, "segments": 0, "silent_segments": 0, "audio_ms": 0}
    for by_label in counts.values():
        for label_counts in by_label.values():
            for key in totals:
                totals[key] += label_counts[key]
    if non_audio:
        _LOG.info("featurize: %d files under the input are not audio (by extension) and were skipped", non_audio)
    metadata = FeaturizeMetadata(
        **static,
        inputs=figures["entries"] + figures["rejected"],
        skipped_non_audio_files=non_audio,
        totals={**totals, "failed": failed["count"]},
        counts=counts,
        mel_stats={"split": "train", **figures["mel_stats"]},
        failed=failed,
        shard_files=len(shards),
        copies=figures.get("copies"),  # absent with --group-copies off: copies were not looked for
    )
    cfg = FeatureConfig.from_dict(static["feature_config"])
    _write_text(FileSystems.join(output, METADATA_FILE), metadata.to_json())
    _write_text(FileSystems.join(output, examples.SCHEMA_FILE), examples.tfmd_schema_text(cfg, static["labels"]))


def summary_line(metadata: FeaturizeMetadata, *, elapsed_s: float, output: str) -> str:
    totals = metadata.totals
    audio_s = totals["audio_ms"] / 1000
    return (
        f"featurize done: {metadata.inputs} inputs, {totals['tracks']} tracks, "
        f"{totals['segments']} segments ({totals['silent_segments']} silent dropped), "
        f"{totals['failed']} failed, {audio_s / 3600:.2f} audio hours in {elapsed_s:.1f} s "
        f"({audio_s / max(elapsed_s, 1e-9):.1f} audio-s/s) -> {output}"
    )


def _label_flag_alias(argv: list[str] | None) -> list[str] | None:
    """Rewrites `--labels MODE` to `--label-source MODE` when MODE is a label mode; any other
    --labels (key=value job labels) is left to Beam."""
    if argv is None:
        return None
    rewritten = list(argv)
    for i, flag in enumerate(rewritten):
        if flag == "--labels" and i + 1 < len(rewritten) and rewritten[i + 1] in LABEL_MODES:
            rewritten[i] = "--label-source"
        elif flag.startswith("--labels=") and flag.split("=", 1)[1] in LABEL_MODES:
            rewritten[i] = "--label-source=" + flag.split("=", 1)[1]
    return rewritten


def _prepare_output(output: str, *, overwrite: bool) -> None:
    existing = [FileSystems.join(output, name) for name in _OUTPUT_NAMES if FileSystems.exists(FileSystems.join(output, name))]
    if not existing:
        return
    # metadata.json is written last, once every shard is final: without it the outputs are what a
    # failed or killed run left (a lost worker, a stopped cluster), and the same command replaces them.
    complete = FileSystems.join(output, METADATA_FILE) in existing
    if not complete:
        _LOG.warning("featurize: --output %s holds an incomplete earlier run (no %s): replacing it", output,
                     METADATA_FILE)
    elif not overwrite:
        raise ValueError(
            f"--output {output} already holds featurize outputs ({', '.join(sorted(existing))}); "
            "pass --overwrite to replace them, or choose another directory"
        )
    FileSystems.delete(existing)


def _write_text(path: str, text: str) -> None:
    with FileSystems.create(path) as handle:
        handle.write(text.encode("utf-8"))


def _version() -> str:
    try:
        return importlib_metadata.version("cattag")
    except importlib_metadata.PackageNotFoundError:
        return "unknown"

