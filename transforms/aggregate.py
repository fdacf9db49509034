"""From a track's segment predictions to its tags: pure functions, no Beam, no TensorFlow.

A track is cut into segments and the model sees each alone; the track's genre comes from
aggregating the segments' class probabilities, its embedding from averaging theirs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from schemas.model_card import ModelCard
from transforms.calibration import Calibration

AGGREGATIONS = ("mean", "max", "vote")
DEFAULT_TAG_THRESHOLD = 0.2


@dataclasses.dataclass(frozen=True)
class Typicality:
    """How much a track's embedding looks like the music the model was trained on.

    A softmax always picks some genre, and can do so confidently for speech or birdsong. The
    typicality of a track is the cosine similarity of its embedding to the nearest class centroid
    of the training tracks; `threshold` is a low percentile of in-distribution tracks' typicality
    (held-out tracks, and training tracks left out of their own centroid), so only about that
    share of music like the training data falls below it.

    `offset`: the embedding dimensions from there on are compared, renormalized. A transfer model's
    embedding starts with its genre posterior, which says how sure the head is, not how the track
    sounds; its typicality compares the backbone's part (offset = the number of classes), which
    flagged all 30 non-music taggings of the catalogue sample instead of 25, letting as much outside
    music through (27 of 60 against 26; bench/RESULTS.md).
    """

    centroids: np.ndarray  # float32 [n_classes, dim - offset], unit rows
    threshold: float
    offset: int = 0

    def __call__(self, embedding: np.ndarray) -> float:
        return float(np.max(self.centroids @ sound_part(embedding, self.offset)))

    @classmethod
    def from_dict(cls, data: dict) -> Typicality:
        return cls(np.asarray(data["centroids"], dtype=np.float32), float(data["threshold"]), int(data.get("offset", 0)))


def sound_part(embeddings: np.ndarray, offset: int) -> np.ndarray:
    """Embeddings (rows or one vector) from dimension `offset` on, unit length; as they are for 0."""
    return embeddings if offset == 0 else unit_rows(np.asarray(embeddings)[..., offset:])


def class_centroids(embeddings: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """[n_classes, dim] unit mean of each class's unit embeddings (zero for a class with none)."""
    sums = np.zeros((n_classes, embeddings.shape[1]))
    np.add.at(sums, labels, embeddings)
    return unit_rows(sums)


def typicality_reference(train_embeddings: np.ndarray, train_labels: np.ndarray, heldout_embeddings: np.ndarray,
                         *, n_classes: int, percentile: float = 5.0, offset: int = 0) -> dict:
    """The Typicality of a model, as a JSON-able dict, from unit track embeddings of its training
    tracks (for the centroids) and of held-out tracks.

    The threshold is a low percentile of in-distribution scores that the centroids did not see:
    the held-out tracks', and each training track's against centroids computed without it
    (leave-one-out). A validation split of a handful of tracks alone gives a fragile percentile.
    `offset`: compare the dimensions from there on (Typicality).
    """
    train_embeddings, heldout_embeddings = sound_part(train_embeddings, offset), sound_part(heldout_embeddings, offset)
    sums = np.zeros((n_classes, train_embeddings.shape[1]))
    counts = np.zeros(n_classes)
    for c in range(n_classes):
        members = train_embeddings[train_labels == c]
        sums[c], counts[c] = members.sum(axis=0), len(members)
    centroids = unit_rows(sums)
    scores = [(heldout_embeddings @ centroids.T).max(axis=1)] if len(heldout_embeddings) else []
    for embedding, label in zip(train_embeddings, train_labels, strict=True):
        loo = centroids.copy()
        loo[label] = unit_rows(sums[label] - embedding) if counts[label] > 1 else 0.0  # a lone track has no class
        scores.append(np.array([(loo @ embedding).max()]))
    pooled = np.concatenate(scores)
    return {"centroids": centroids.round(6).tolist(), "threshold": float(np.percentile(pooled, percentile)),
            "percentile": percentile, "offset": offset, "heldout_tracks": len(heldout_embeddings),
            "leave_one_out_tracks": len(train_embeddings)}


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Each row (or a vector) scaled to unit L2 length; zero rows stay zero."""
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@dataclasses.dataclass(frozen=True)
class ConfidencePolicy:
    """When a track is flagged for review: its confidence is below `min_confidence`, the runner-up
    is within `min_margin` of it (two genres about equally likely), or (with a Typicality) its
    embedding is unlike the training music.

    With a Calibration (models trained since calibrated confidence), `confidence` is the calibrated
    chance that the genre is right, `min_confidence` defaults to the threshold chosen at train time,
    and that threshold alone flags: typicality and a close runner-up are then reasons given for a
    flagged track (the calibrated confidence already weighs them)."""

    min_confidence: float = 0.6
    min_margin: float = 0.1
    typicality: Typicality | None = None
    calibration: Calibration | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ValueError(f"--min-confidence {self.min_confidence}: expected a score between 0 and 1")
        if not 0.0 <= self.min_margin <= 1.0:
            raise ValueError(f"--min-margin {self.min_margin}: expected a score difference between 0 and 1")


@dataclasses.dataclass(frozen=True)
class TrackTags:
    genre: str
    confidence: float
    top_k: list[tuple[str, float]]
    scores: np.ndarray  # float32 [n_classes], sums to 1, aligned with the label vocabulary
    embedding: np.ndarray  # float32 [dim], unit length
    low_confidence: bool
    review_reason: str | None
    typicality: float | None
    tags: list[tuple[str, float]] = dataclasses.field(default_factory=list)  # labels the track carries, best first


@dataclasses.dataclass(frozen=True)
class MultiLabel:
    """How a multi-label model's scores become tags (a model card's task "multilabel", as musicnn's 50 tags: a
    track carries every tag whose score reaches that tag's threshold): per-label thresholds, and which labels are
    genres (the `genre` column is the best-scoring genre label, its score the `confidence`)."""

    thresholds: np.ndarray  # float32 [n_labels]
    genre_mask: np.ndarray  # bool [n_labels]

    @classmethod
    def from_card(cls, card: ModelCard, labels: Sequence[str], *, threshold: float | None = None) -> MultiLabel:
        """From a model card's tag_thresholds and genre_labels; `threshold` overrides every label's."""
        known = card.tag_thresholds or {}
        thresholds = [threshold if threshold is not None else known.get(label, DEFAULT_TAG_THRESHOLD) for label in labels]
        genres = set(card.genre_labels or labels)
        return cls(np.asarray(thresholds, np.float32), np.array([label in genres for label in labels]))


def aggregate_scores(probabilities: np.ndarray, method: str = "mean") -> np.ndarray:
    """[n_segments, n_classes] segment probabilities -> [n_classes] track scores summing to 1.

    mean: the mean probability (a soft vote; the default, and what evaluation reports).
    max:  each class's highest segment probability, renormalized (a genre that is clear in one
          passage wins over one that is vaguely everywhere).
    vote: the share of segments whose top class it is; ties go to the higher mean probability.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 2 or probabilities.shape[0] == 0:
        raise ValueError(f"expected [segments, classes] probabilities, got shape {probabilities.shape}")
    if method == "mean":
        scores = probabilities.mean(axis=0)
    elif method == "max":
        scores = probabilities.max(axis=0)
    elif method == "vote":
        votes = np.bincount(probabilities.argmax(axis=1), minlength=probabilities.shape[1]).astype(np.float64)
        # A tie-break far below one vote's weight (1 / n_segments), so it never outweighs a vote.
        scores = votes + probabilities.mean(axis=0) * 1e-6
    else:
        raise ValueError(f"aggregation {method!r}: expected one of {', '.join(AGGREGATIONS)}")
    return (scores / scores.sum()).astype(np.float32)


def mean_embedding(embeddings: np.ndarray) -> np.ndarray:
    """[n_segments, dim] -> [dim]: the L2-normalized mean (cosine similarity is then a dot product)."""
    return unit_rows(np.asarray(embeddings, dtype=np.float64).mean(axis=0)).astype(np.float32)


def top_k(scores: np.ndarray, labels: Sequence[str], k: int) -> list[tuple[str, float]]:
    """The k best (label, score) pairs, best first; equal scores in vocabulary order."""
    order = np.argsort(-np.asarray(scores), kind="stable")[:k]
    return [(labels[i], float(scores[i])) for i in order]


def review_reason(scores: np.ndarray, policy: ConfidencePolicy, typicality: float | None = None,
                  confidence: float | None = None) -> str | None:
    """Why a track's tags need a person to look at them, or None. `confidence`: the calibrated one,
    when the policy has a Calibration: then it alone decides the flag (it already weighs the top score
    and typicality), and the reason names what drove it down."""
    ranked = np.sort(np.asarray(scores))[::-1]
    close = len(ranked) > 1 and ranked[0] - ranked[1] < policy.min_margin
    unlike = policy.typicality is not None and typicality is not None and typicality < policy.typicality.threshold
    if policy.calibration is not None and confidence is not None:
        if confidence >= policy.min_confidence:
            return None
        return "unlike the training music" if unlike else "close runner-up" if close else "low confidence"
    if unlike:
        return "unlike the training music"
    if ranked[0] < policy.min_confidence:
        return "low score"
    if close:
        return "close runner-up"
    return None


def tag_track(
    probabilities: np.ndarray,
    embeddings: np.ndarray,
    labels: Sequence[str],
    *,
    method: str = "mean",
    k: int = 3,
    policy: ConfidencePolicy = ConfidencePolicy(),
    multilabel: MultiLabel | None = None,
) -> TrackTags:
    """A track's tags from its segments' probabilities [n, classes] and embeddings [n, dim]."""
    if len(probabilities) != len(embeddings):
        raise ValueError(f"{len(probabilities)} segment probabilities but {len(embeddings)} embeddings")
    if np.shape(probabilities)[-1] != len(labels):
        raise ValueError(f"{np.shape(probabilities)[-1]} class probabilities for {len(labels)} labels")
    if multilabel is not None:
        return _multilabel_tags(probabilities, embeddings, labels, k=k, multilabel=multilabel)
    scores = aggregate_scores(probabilities, method)
    best = top_k(scores, labels, max(k, 1))
    embedding = mean_embedding(embeddings)
    typicality = policy.typicality(embedding) if policy.typicality is not None else None
    confidence = best[0][1]
    if policy.calibration is not None:
        confidence = float(policy.calibration.confidence(confidence, typicality))
    reason = review_reason(scores, policy, typicality, confidence)
    return TrackTags(
        genre=best[0][0],
        confidence=confidence,
        top_k=best[:k],
        scores=scores,
        embedding=embedding,
        low_confidence=reason is not None,
        review_reason=reason,
        typicality=typicality,
        tags=[] if reason is not None else [(best[0][0], confidence)],
    )


def _multilabel_tags(probabilities: np.ndarray, embeddings: np.ndarray, labels: Sequence[str], *, k: int,
                     multilabel: MultiLabel) -> TrackTags:
    """Tags of a multi-label model: each tag's score is its mean over the segments (not
    renormalized: tags are independent), and the track carries every tag at or above its threshold.
    Flagged for review when no genre label reaches its threshold."""
    scores = np.asarray(probabilities, dtype=np.float64).mean(axis=0).astype(np.float32)
    genre_scores = np.where(multilabel.genre_mask, scores, -1.0)
    best_genre = int(np.argmax(genre_scores))
    passing = np.flatnonzero(scores >= multilabel.thresholds)
    carried = top_k(scores[passing], [labels[i] for i in passing], len(passing))
    confident = scores[best_genre] >= multilabel.thresholds[best_genre]
    return TrackTags(
        genre=labels[best_genre],
        confidence=float(scores[best_genre]),
        top_k=top_k(scores, labels, max(k, 1))[:k],
        scores=scores,
        embedding=mean_embedding(embeddings),
        low_confidence=not confident,
        review_reason=None if confident else "no genre tag above its threshold",
        typicality=None,
        tags=carried,
    )
