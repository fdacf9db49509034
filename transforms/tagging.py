"""The tag pipeline's Beam steps: catalogue entries -> log-mel segments -> RunInference -> one tag row per track.

TagEntries is the one composite that batch tagging and the watch share (only their sources, windows
and sinks differ): FeaturizeTracks (the same log-mels the model trained on), then TagTracks:

    MelSegment --KeyBySegment--> RunInference(SavedModelHandler) --ByTrack--.
    TrackSummary --ByTrack-------------------------------------------------+-> CoGroupByKey -> AggregateTrack -> rows
    failed inference batches --ByTrack-------------------------------------+                   '-> Failure
    descriptors of the decoded track (tempo, key, loudness) ---------------+
    health of the decoded track (faults, fingerprint) ---------------------'

A track gets a row only when every one of its segments came back from the model; one failed
segment sends the whole track to the errors output (stage "inference"), never a partial tag.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
from collections.abc import Iterator, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.ml.inference.base import KeyedModelHandler, RunInference

from schemas import tags as tags_schema
from schemas.descriptors import Descriptors, not_computed
from schemas.health import TrackHealth
from transforms.health import Thresholds, true_peak_over
from schemas.failure import Failure
from schemas.features import FeatureConfig, SegmentPolicy
from schemas.model_card import ModelCard
from transforms import aggregate, counters
from transforms.calibration import Calibration
from transforms.featurize_steps import FeaturizeTracks
from transforms.inference import DEFAULT_BATCH_SIZE, SavedModelHandler
from transforms.records import TrackSummary


@dataclasses.dataclass(frozen=True)
class SegmentOutput:
    index: int
    probabilities: np.ndarray
    embedding: np.ndarray


@dataclasses.dataclass(frozen=True)
class TagSettings:
    """What every row of one run shares, and how tracks are aggregated and flagged."""

    labels: tuple[str, ...]
    embedding_dim: int
    model_version: str
    feature_version: str
    tagged_at: datetime.datetime | None  # None: each row's own time of tagging (a long-running watch)
    aggregation: str = "mean"
    top_k: int = 3
    policy: aggregate.ConfidencePolicy = dataclasses.field(default_factory=aggregate.ConfidencePolicy)
    multilabel: aggregate.MultiLabel | None = None  # a multi-label tagger's thresholds; None: a genre model
    # Reviewers' labels the model was trained with: (track_id, label or None for "not music", the genre the
    # reviewed model had given). A reviewed track's row carries the reviewed label (genre_source "review").
    reviews: tuple[tuple[str, str | None, str | None], ...] = ()
    descriptors: bool = True  # tempo, key and loudness columns computed (False: null, noted "descriptors off")
    health: bool = True  # the health columns and fingerprint computed (False: null)
    health_thresholds: Thresholds = dataclasses.field(default_factory=Thresholds)  # their flags' thresholds

    def review_of(self, track_id: str) -> tuple[str | None, str | None] | None:
        """(label, model_genre) a person gave this track, or None."""
        return self._reviews_by_track.get(track_id)

    @functools.cached_property
    def _reviews_by_track(self) -> dict[str, tuple[str | None, str | None]]:
        return {track: (label, guess) for track, label, guess in self.reviews}

    @classmethod
    def for_model(cls, *, labels: Sequence[str], card: ModelCard, feature_version: str,
                  typicality: dict | None, tagged_at: datetime.datetime | None, aggregation: str = "mean",
                  top_k: int = 3, min_confidence: float | None = None, min_margin: float | None = None,
                  tag_threshold: float | None = None, calibration: dict | None = None,
                  reviews: dict | None = None, descriptors: bool = True, health: bool = True,
                  health_thresholds: Thresholds | None = None) -> TagSettings:
        """The settings of a model (its card, labels, typicality reference, calibration and reviews)
        with the user's choices."""
        defaults = aggregate.ConfidencePolicy()
        calibrated = Calibration.from_dict(calibration) if calibration and not card.multilabel else None
        return cls(
            labels=tuple(labels), embedding_dim=card.require_embedding_dim(), model_version=card.model_version,
            feature_version=feature_version, tagged_at=tagged_at, aggregation=aggregation, top_k=top_k,
            policy=aggregate.ConfidencePolicy(
                min_confidence if min_confidence is not None
                else calibrated.flag_below if calibrated is not None else defaults.min_confidence,
                defaults.min_margin if min_margin is None else min_margin,
                aggregate.Typicality.from_dict(typicality) if typicality else None,
                calibrated),
            multilabel=aggregate.MultiLabel.from_card(card, labels, threshold=tag_threshold)
            if card.multilabel else None,
            reviews=tuple(sorted((track, review.get("label"), review.get("model_genre"))
                                 for track, review in (reviews or {}).items())),
            descriptors=descriptors, health=health, health_thresholds=health_thresholds or Thresholds())

    def schema(self) -> pa.Schema:
        """The Arrow schema of the rows these settings produce."""
        return tags_schema.tags_schema(labels=self.labels, embedding_dim=self.embedding_dim,
                                       model_version=self.model_version, feature_version=self.feature_version)


def tag_row(summary: TrackSummary, tags: aggregate.TrackTags | None, settings: TagSettings,
            descriptors: Descriptors | None = None, health: TrackHealth | None = None) -> dict:
    """A row of schemas.tags.tags_schema; `tags` is None for a track with no audible segment,
    `descriptors` and `health` None when they were not computed."""
    row = {
        **(descriptors or not_computed()).columns(),
        **(health or TrackHealth()).columns(),
        "track_id": summary.entry.track_id,
        "uri": summary.entry.uri,
        tags_schema.FINGERPRINT: summary.entry.fingerprint,
        "duration_s": float(summary.duration_s),
        "n_segments": summary.n_segments,
        "model_version": settings.model_version,
        "feature_version": settings.feature_version,
        "tagged_at": settings.tagged_at or datetime.datetime.now(datetime.UTC),
    }
    if row["health_flags"] is not None and true_peak_over(row["true_peak_dbtp"], settings.health_thresholds):
        row["health_flags"] = [*row["health_flags"], "true peak"]  # from the descriptors' loudness meter
    if tags is None:
        row = {**row, "genre": None, "confidence": 0.0, "top_k": None, "probabilities": None, "tags": None,
               "embedding": [0.0] * settings.embedding_dim, tags_schema.GENRE_SOURCE: tags_schema.BY_MODEL,
               "model_genre": None, "low_confidence": True, "review_reason": "silent", "typicality": None}
    else:
        row = {
            **row,
            "genre": tags.genre,
            "confidence": tags.confidence,
            "top_k": [{"label": label, "score": score} for label, score in tags.top_k],
            "probabilities": tags.scores.tolist(),
            "tags": [{"label": label, "score": score} for label, score in tags.tags],
            "embedding": tags.embedding.tolist(),
            tags_schema.GENRE_SOURCE: tags_schema.BY_MODEL,
            "model_genre": tags.genre,
            "low_confidence": tags.low_confidence,
            "review_reason": tags.review_reason,
            "typicality": tags.typicality,
        }
    review = settings.review_of(summary.entry.track_id)
    return row if review is None else reviewed_row(row, *review)


def reviewed_row(row: dict, label: str | None, model_genre: str | None) -> dict:
    """A tag row for a track a person labelled: the label outranks the model's genre (None: not music)."""
    return {**row, "genre": label, "confidence": 1.0, tags_schema.GENRE_SOURCE: tags_schema.BY_REVIEW,
            "model_genre": model_genre, "tags": [{"label": label, "score": 1.0}] if label else [],
            "low_confidence": False, "review_reason": None}


def failed_batch_to_tracks(failed) -> Iterator[tuple[str, str]]:
    """RunInference's dead letter (batch of ((track_id, index), mel), error) -> (track_id, reason)."""
    batch, error = failed
    if isinstance(error, tuple) and len(error) >= 2:  # (exception type, repr, traceback lines)
        error = error[1]
    reason = str(error).strip().splitlines()[-1] if str(error).strip() else "inference failed"
    for track_id in sorted({key[0] for key, _ in batch}):
        yield track_id, reason


class AggregateTrack(beam.DoFn):
    """(track_id, {summary, segments, failed}) -> a tag row, or a Failure on FAILED."""

    FAILED = "failed"

    def __init__(self, settings: TagSettings):
        self._settings = settings

    def process(self, element) -> Iterator[dict | beam.pvalue.TaggedOutput]:
        track_id, grouped = element
        summaries, outputs, failed = list(grouped["summary"]), list(grouped["segments"]), list(grouped["failed"])
        described = list(grouped.get("descriptors", ()))
        checked = list(grouped.get("health", ()))
        if not summaries:  # cannot happen: segments only exist for summarized tracks
            raise RuntimeError(f"segments of track {track_id!r} arrived without its summary")
        summary = summaries[0]
        if failed or len(outputs) != summary.n_segments:
            counters.INFERENCE_FAILED.inc()
            reason = failed[0] if failed else f"{len(outputs)} of {summary.n_segments} segments came back from the model"
            yield beam.pvalue.TaggedOutput(self.FAILED, Failure(summary.entry.uri, track_id, "inference", reason))
            return
        tags = None
        if outputs:
            outputs.sort(key=lambda out: out.index)
            tags = aggregate.tag_track(
                np.stack([out.probabilities for out in outputs]), np.stack([out.embedding for out in outputs]),
                self._settings.labels, method=self._settings.aggregation, k=self._settings.top_k,
                policy=self._settings.policy, multilabel=self._settings.multilabel)
        row = tag_row(summary, tags, self._settings, described[0] if described else None,
                      checked[0] if checked else None)
        counters.TAGGED.inc()
        if row["low_confidence"]:
            counters.LOW_CONFIDENCE.inc()
        yield row


class TagTracks(beam.PTransform):
    """{'segments': MelSegment, 'tracks': TrackSummary[, 'descriptors': (track_id, Descriptors)]}
    -> {'rows': dict, 'failures': Failure}."""

    def __init__(self, model_dir: str, settings: TagSettings, *, inference_batch_size: int = DEFAULT_BATCH_SIZE,
                 inference_threads: int = 0):
        super().__init__()
        self._handler = KeyedModelHandler(SavedModelHandler(model_dir, max_batch_size=inference_batch_size,
                                                            intra_op_threads=inference_threads))
        self._settings = settings

    def expand(self, features):
        keyed = features["segments"] | "KeyBySegment" >> beam.Map(
            lambda s: ((s.entry.track_id, s.index), s.mel))
        predictions, dead_letters = keyed | "RunInference" >> RunInference(self._handler).with_exception_handling()
        outputs = predictions | "SegmentOutputs" >> beam.Map(_segment_output)
        failed = dead_letters.failed_inferences | "FailedByTrack" >> beam.FlatMap(failed_batch_to_tracks)
        summaries = features["tracks"] | "SummaryByTrack" >> beam.Map(lambda t: (t.entry.track_id, t))
        grouped = {"summary": summaries, "segments": outputs, "failed": failed}
        for analysis in ("descriptors", "health"):
            if analysis in features:
                grouped[analysis] = features[analysis]
        tagged = (
            grouped
            | "GroupByTrack" >> beam.CoGroupByKey()
            | "AggregateTrack" >> beam.ParDo(AggregateTrack(self._settings)).with_outputs(
                AggregateTrack.FAILED, main="rows")
        )
        return {"rows": tagged.rows, "failures": tagged[AggregateTrack.FAILED]}


def _segment_output(keyed_prediction) -> tuple[str, SegmentOutput]:
    (track_id, index), prediction = keyed_prediction
    inference = prediction.inference  # the mel (prediction.example) is dropped here, before the shuffle
    return track_id, SegmentOutput(index, inference["probabilities"], inference["embedding"])


class TagEntries(beam.PTransform):
    """Fingerprinted CatalogueEntry -> {'rows': tag rows, 'failures': Failure of every stage}.

    The steps batch tagging and the watch share: decode, segment and log-mel with the model's own
    feature config (a track with no audible segment still gets a row, flagged "silent"), then the model.
    """

    def __init__(self, model_dir: str, settings: TagSettings, cfg: FeatureConfig, policy: SegmentPolicy, *,
                 inference_batch_size: int = DEFAULT_BATCH_SIZE, inference_threads: int = 0,
                 progress_dir: str | None = None):
        super().__init__()
        self._model_dir = model_dir
        self._settings = settings
        self._cfg = cfg
        self._policy = policy
        self._batch_size = inference_batch_size
        self._threads = inference_threads
        self._progress_dir = progress_dir

    def expand(self, entries):
        features = entries | "FeaturizeTracks" >> FeaturizeTracks(self._cfg, self._policy, self._progress_dir,
                                                                  keep_silent_tracks=True,
                                                                  descriptors=self._settings.descriptors,
                                                                  health=self._settings.health,
                                                                  health_thresholds=self._settings.health_thresholds)
        tagged = features | "TagTracks" >> TagTracks(self._model_dir, self._settings,
                                                     inference_batch_size=self._batch_size,
                                                     inference_threads=self._threads)
        failures = (features["failures"], tagged["failures"]) | "TagFailures" >> beam.Flatten()
        return {"rows": tagged["rows"], "failures": failures}
