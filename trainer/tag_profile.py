"""The tag-profile expert: the user's labels mapped onto the pretrained tagger's own tags.

Each label's profile is the mean of its training segments' tag log-odds (the backbone's 50
`taggram` scores, standardized with the training statistics); a segment's score for a label is the
cosine of its standardized log-odds to that profile, times a scale fitted by maximum likelihood,
through a softmax. Fifty numbers a label and one scale, against the head's 33,000 weights, so it learns
less of the training music's quirks, and away from it (music from other sources) it was right more
often than the head (bench/RESULTS.md, "Away from home"). The default genre model averages the
two (trainer/transfer.py).

The same arithmetic twice: numpy (`probabilities`, for cross-fitting at train time) and a Keras
layer (`TagProfile`, inside the exported SavedModel); a test holds them equal.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
from keras import layers

_EPS = 1e-4
SCALE_BOUNDS = (0.5, 100.0)


@dataclasses.dataclass(frozen=True)
class Profile:
    mean: np.ndarray  # [tags] of the log-odds
    std: np.ndarray  # [tags]
    centroids: np.ndarray  # [labels, tags], unit rows (zero for a label with no segment)
    scale: float

    def top_tags(self, tags: list[str], labels: list[str], k: int = 5) -> dict[str, list[str]]:
        """Per label, the tags its profile leans on most: what the model card shows of the mapping."""
        return {label: [tags[i] for i in np.argsort(-row, kind="stable")[:k]]
                for label, row in zip(labels, self.centroids, strict=True)}


def log_odds(taggram: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(taggram, np.float64), _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _cosines(profile_mean, profile_std, centroids, taggram) -> np.ndarray:
    return _unit((log_odds(taggram) - profile_mean) / profile_std) @ centroids.T


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def fit(taggram: np.ndarray, label_id: np.ndarray, n_classes: int) -> Profile:
    """Profiles from training segments' tag scores [n, tags] and labels; the scale maximizes the
    (class-balanced) likelihood of those segments."""
    from scipy.optimize import minimize_scalar

    z = log_odds(taggram)
    mean, std = z.mean(axis=0), np.maximum(z.std(axis=0), 1e-3)
    standardized = _unit((z - mean) / std)
    centroids = np.zeros((n_classes, z.shape[1]))
    for c in range(n_classes):
        members = standardized[label_id == c]
        if len(members):
            centroids[c] = members.mean(axis=0)
    centroids = _unit(centroids)
    cosines = standardized @ centroids.T
    counts = np.bincount(label_id, minlength=n_classes).astype(np.float64)
    weight = (1.0 / np.maximum(counts, 1))[label_id]

    def nll(log_scale):
        logp = np.log(_softmax(np.exp(log_scale) * cosines)[np.arange(len(label_id)), label_id] + 1e-12)
        return -float(np.sum(weight * logp) / weight.sum())

    found = minimize_scalar(nll, bounds=tuple(np.log(SCALE_BOUNDS)), method="bounded")
    return Profile(mean.astype(np.float32), std.astype(np.float32), centroids.astype(np.float32),
                   float(np.exp(found.x)))


def probabilities(profile: Profile, taggram: np.ndarray) -> np.ndarray:
    """[n, labels] posteriors of segments' tag scores [n, tags]."""
    return _softmax(profile.scale * _cosines(profile.mean, profile.std, profile.centroids, taggram)).astype(np.float32)


@keras.saving.register_keras_serializable(package="cattag")
class TagProfile(layers.Layer):
    """taggram [batch, tags] -> label posteriors [batch, labels]: `probabilities` as a layer, its
    profile held as non-trainable weights (so the SavedModel carries it)."""

    def __init__(self, n_tags: int, n_labels: int, **kwargs):
        super().__init__(**kwargs)
        self.n_tags, self.n_labels = n_tags, n_labels
        self.mean = self.add_weight(shape=(n_tags,), initializer="zeros", trainable=False, name="mean")
        self.std = self.add_weight(shape=(n_tags,), initializer="ones", trainable=False, name="std")
        self.centroids = self.add_weight(shape=(n_labels, n_tags), initializer="zeros", trainable=False,
                                         name="centroids")
        self.scale = self.add_weight(shape=(), initializer="ones", trainable=False, name="scale")

    @classmethod
    def of(cls, profile: Profile, **kwargs) -> TagProfile:
        layer = cls(profile.centroids.shape[1], profile.centroids.shape[0], **kwargs)
        layer.set_profile(profile)
        return layer

    def set_profile(self, profile: Profile) -> None:
        self.mean.assign(profile.mean)
        self.std.assign(profile.std)
        self.centroids.assign(profile.centroids)
        self.scale.assign(profile.scale)

    def call(self, taggram):
        p = keras.ops.clip(keras.ops.cast(taggram, "float32"), _EPS, 1 - _EPS)
        z = (keras.ops.log(p / (1 - p)) - self.mean) / self.std
        z = z / keras.ops.maximum(keras.ops.norm(z, axis=-1, keepdims=True), 1e-12)
        return keras.ops.softmax(self.scale * keras.ops.matmul(z, keras.ops.transpose(self.centroids)), axis=-1)

    def get_config(self):
        return {**super().get_config(), "n_tags": self.n_tags, "n_labels": self.n_labels}
