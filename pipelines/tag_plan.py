"""One tag plan for `cattag tag` and `cattag tag --watch`: the flags checked once, the model resolved once,
and the settings every row shares built from values. The two commands differ only in their source (a
listed catalogue, or a folder polled), their windows and their sink; both hand the plan's TagEntries
to Beam.

Beam parses the flags of every PipelineOptions subclass with one parser, so the tag flags (TagOptions)
and the watch's (WatchOptions) are declared here, once, for both commands and `cattag tag --help`.
"""

from __future__ import annotations

import dataclasses
import datetime

import pyarrow as pa
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.options import CatalogueOptions
from schemas import presets
from schemas.features import SegmentPolicy
from schemas.model_assets import ModelAssets, read_model_assets
from schemas.tag_output import TagOutput
from transforms import aggregate
from transforms.health import Thresholds
from transforms.inference import DEFAULT_BATCH_SIZE
from transforms.tagging import TagEntries, TagSettings


class TagOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        defaults = aggregate.ConfidencePolicy()
        parser.add_argument("--model", help="a `cattag train` model directory (SavedModel with its assets), or a "
                                            "pretrained name from `cattag pretrained list` (musicnn-msd, musicnn-mtt)")
        parser.add_argument("--top-k", type=int, default=3, help="labels with scores kept per track (default %(default)s)")
        parser.add_argument("--min-confidence", type=float, default=None,
                            help="tracks whose confidence is below this are flagged low_confidence (default: the "
                                 "threshold the model chose on held-out tracks when it was trained, to catch most "
                                 f"wrong tags; {defaults.min_confidence} for a model without one)")
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
        parser.add_argument("--descriptors", choices=("on", "off"), default="on",
                            help="tempo, key and loudness per track from the same decode (docs/descriptors.md); "
                                 "off leaves those columns null (default %(default)s)")
        parser.add_argument("--health", choices=("on", "off"), default="on",
                            help="faults a distributor rejects (clipping, silence, gaps, DC, dual mono, spectral "
                                 "cutoff) and the Chromaprint fingerprint, from the same decode; off leaves those "
                                 "columns null (default %(default)s)")
        parser.add_argument("--health-thresholds", default="",
                            help="override health flags' thresholds, e.g. gap_s=4,true_peak_dbtp=0: clipped_runs (10), "
                                 "edge_silence_s (3), gap_s (2), dc_offset (0.01), cutoff_share (0.85 of Nyquist), "
                                 "true_peak_dbtp (-1), loudness_fence_iqr (1.5: Tukey's fences over the run's "
                                 "loudness); docs/tag.md says what each measures")
        parser.add_argument("--skip-existing", action="store_true",
                            help="tag only inputs that --output does not already hold for this model version; "
                                 "rerunning a command with it adds no duplicate rows")
        parser.add_argument("--reuse-duplicates", action="store_true",
                            help="with --skip-existing: an input that is a copy of a track --output holds for this "
                                 "model (the same bytes, or the same recording by its audio fingerprint) takes that "
                                 "track's tags instead of running the model; its own health and loudness are "
                                 "measured, and `reused_from` names the copy. Costs one extra decode per new input")
        parser.add_argument("--link-duplicates", choices=("on", "off"), default="on",
                            help="with --skip-existing or --watch, and --health on: a new input that is a copy of a "
                                 "track --output holds (from any earlier run or a watch) takes that track's "
                                 "recording_id, and duplicate_of its preferred copy; off links copies within the run "
                                 "(or the watch's window) only. Costs a read of the held fingerprints per batch run, "
                                 "and a watch about 0.5 kB of memory per held track (default %(default)s)")


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
class TagPlan:
    """What a tag run (batch or watch) needs, checked and resolved before any job starts."""

    source: str  # --input
    output: TagOutput
    model_dir: str
    assets: ModelAssets
    settings: TagSettings
    policy: SegmentPolicy
    inference_batch_size: int = DEFAULT_BATCH_SIZE
    inference_threads: int = 0
    reuse_duplicates: bool = False
    link_duplicates: bool = True

    @classmethod
    def from_options(cls, options: PipelineOptions, *, tagged_at: datetime.datetime | None) -> TagPlan:
        """Raises ValueError for flags that do not fit, and the model's own errors (not a cattag model, a
        feature config this code cannot reproduce) before any worker loads it.

        `tagged_at`: the time every row records (a batch run), or None for each row's own time (a watch)."""
        catalogue_options = options.view_as(CatalogueOptions)
        tag_options = options.view_as(TagOptions)
        catalogue_options.require_paths()
        if not tag_options.model:
            raise ValueError("missing required flag: --model")
        if tag_options.reuse_duplicates and not tag_options.skip_existing:
            raise ValueError("--reuse-duplicates goes with --skip-existing: it reuses the tags --output already holds")
        if tag_options.top_k < 1:
            raise ValueError(f"--top-k {tag_options.top_k}: expected at least 1")
        if tag_options.tag_threshold is not None and not 0.0 <= tag_options.tag_threshold <= 1.0:
            raise ValueError(f"--tag-threshold {tag_options.tag_threshold}: expected a score between 0 and 1")
        model_dir = presets.resolve_model(tag_options.model)
        assets = read_model_assets(model_dir)  # refuses a model whose feature config we cannot reproduce
        settings = TagSettings.for_model(
            labels=assets.labels, card=assets.card, feature_version=assets.cfg.version, typicality=assets.typicality,
            tagged_at=tagged_at, aggregation=tag_options.aggregate, top_k=tag_options.top_k,
            min_confidence=tag_options.min_confidence, min_margin=tag_options.min_margin,
            tag_threshold=tag_options.tag_threshold, calibration=assets.calibration, reviews=assets.reviews,
            descriptors=tag_options.descriptors == "on", health=tag_options.health == "on",
            health_thresholds=Thresholds.parse(tag_options.health_thresholds))
        return cls(source=catalogue_options.input, output=TagOutput(catalogue_options.output), model_dir=model_dir,
                   assets=assets, settings=settings, policy=catalogue_options.segment_policy(),
                   inference_batch_size=tag_options.inference_batch_size,
                   inference_threads=tag_options.inference_threads,
                   reuse_duplicates=tag_options.reuse_duplicates,
                   link_duplicates=tag_options.link_duplicates == "on")

    @property
    def model_version(self) -> str:
        return self.settings.model_version

    @property
    def schema(self) -> pa.Schema:
        return self.settings.schema()

    def tag_entries(self, progress_dir: str | None = None) -> TagEntries:
        """Fingerprinted entries -> {'rows', 'failures'}: the steps batch and watch share."""
        return TagEntries(self.model_dir, self.settings, self.assets.cfg, self.policy,
                          inference_batch_size=self.inference_batch_size, inference_threads=self.inference_threads,
                          progress_dir=progress_dir)
