"""Confidence that means what it says: pure functions, no Beam, no TensorFlow.

A genre model's top posterior is not the chance that its genre is right: a head trained on a few
dozen tracks is overconfident, more so on music unlike them. `cattag train` fits a small logistic
model on held-out tracks (cross-fitted: each scored by a model that did not train on it),

    confidence = sigmoid(w . standardized [logit(top posterior), typicality, their product] + bias)

and chooses the review threshold from the same tracks (flag_below). `cattag tag` applies both per
track (transforms/aggregate.py); `cattag evaluate` reports the reliability curve and expected
calibration error (ECE) of the result.
"""

from __future__ import annotations

import dataclasses

import numpy as np

# The review threshold is the confidence below which this share of held-out wrong tags falls...
FLAG_RECALL = 0.8
# ...unless that would flag more than this share of held-out tracks.
FLAG_MAX_SHARE = 0.5
RELIABILITY_BINS = 10
FEATURES = ("logit_top", "typicality", "logit_top_x_typicality")
_EPS = 1e-6


@dataclasses.dataclass(frozen=True)
class Calibration:
    """The fitted calibrator and review threshold of one model (MDIR/assets/calibration.json)."""

    weights: tuple[float, ...]  # over FEATURES, standardized
    bias: float
    center: tuple[float, ...]  # the held-out tracks' feature means and standard deviations
    scale: tuple[float, ...]
    flag_below: float  # tracks with a confidence below this are flagged for review
    typicality_default: float = 1.0  # a track with no typicality (a model without a reference) counts as typical

    def confidence(self, top: float | np.ndarray, typicality: float | np.ndarray | None) -> np.ndarray:
        """P(the top genre is right) for top posteriors and typicalities."""
        if typicality is None:
            typicality = np.full(np.shape(top), self.typicality_default)
        x = (features(top, typicality) - np.asarray(self.center)) / np.asarray(self.scale)
        return 1.0 / (1.0 + np.exp(-(x @ np.asarray(self.weights) + self.bias)))

    def to_dict(self) -> dict:
        return {"features": list(FEATURES), "weights": list(self.weights), "bias": self.bias,
                "center": list(self.center), "scale": list(self.scale), "flag_below": self.flag_below}

    @classmethod
    def from_dict(cls, data: dict) -> Calibration:
        if list(data.get("features", FEATURES)) != list(FEATURES):
            raise ValueError(f"calibration over {data.get('features')}: this cattag reads {list(FEATURES)}")
        return cls(tuple(float(w) for w in data["weights"]), float(data["bias"]),
                   tuple(float(c) for c in data["center"]), tuple(float(c) for c in data["scale"]),
                   float(data["flag_below"]))


def features(top: float | np.ndarray, typicality: float | np.ndarray) -> np.ndarray:
    """[n, FEATURES] (or [FEATURES] for one track)."""
    top_logit, typicality = logit(top), np.asarray(typicality, np.float64)
    return np.stack(np.broadcast_arrays(top_logit, typicality, top_logit * typicality), axis=-1)


def logit(p: float | np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


def fit(top: np.ndarray, typicality: np.ndarray, right: np.ndarray, *, l2: float = 1.0) -> Calibration:
    """Logistic regression of `right` (bool per held-out track) on standardized FEATURES, with an L2
    penalty of `l2` x |w|^2 on the summed log-loss (a prior worth about one track: a few dozen tracks
    can be separable), then the review threshold from the same tracks."""
    from scipy.optimize import minimize

    raw = features(top, typicality)
    y = np.asarray(right, np.float64)
    if len(y) == 0:
        raise ValueError("no held-out tracks to calibrate on")
    center, scale = raw.mean(axis=0), np.maximum(raw.std(axis=0), 1e-6)
    x = (raw - center) / scale
    n = x.shape[1]
    l2 = l2 / len(y)  # on the mean log-loss

    def loss(params):
        z = x @ params[:n] + params[n]
        # log(1 + e^z) - y z, stably; gradient (sigmoid(z) - y) x
        nll = np.mean(np.logaddexp(0.0, z) - y * z) + l2 * float(params[:n] @ params[:n])
        residual = 1.0 / (1.0 + np.exp(-z)) - y
        grad = np.concatenate([x.T @ residual / len(y) + 2 * l2 * params[:n], [residual.mean()]])
        return nll, grad

    found = minimize(loss, np.zeros(n + 1), jac=True, method="L-BFGS-B")
    provisional = Calibration(tuple(float(w) for w in found.x[:n]), float(found.x[n]),
                              tuple(float(c) for c in center), tuple(float(c) for c in scale), flag_below=0.0)
    confidence = provisional.confidence(top, typicality)
    return dataclasses.replace(provisional, flag_below=flag_threshold(confidence, np.asarray(right, bool)))


def flag_threshold(confidence: np.ndarray, right: np.ndarray, *, recall: float = FLAG_RECALL,
                   max_share: float = FLAG_MAX_SHARE) -> float:
    """The confidence below which `recall` of the wrong tracks fall, capped so that at most
    `max_share` of all tracks do. With no wrong track held out: the cap alone."""
    confidence = np.asarray(confidence, np.float64)
    cap = float(np.quantile(confidence, max_share)) if len(confidence) else 0.5
    wrong = np.sort(confidence[~np.asarray(right, bool)])
    if len(wrong) == 0:
        return cap
    # The smallest threshold t with (wrong confidence < t) covering `recall` of them.
    needed = int(np.ceil(recall * len(wrong)))
    threshold = float(wrong[needed - 1]) + 1e-6
    return min(threshold, cap)


def reliability(confidence: np.ndarray, right: np.ndarray, *, bins: int = RELIABILITY_BINS) -> list[dict]:
    """The reliability curve: per equal-width confidence bin with tracks in it, how many, their
    mean confidence and the share that were right."""
    confidence, right = np.asarray(confidence, np.float64), np.asarray(right, bool)
    index = np.minimum((confidence * bins).astype(int), bins - 1)
    curve = []
    for b in range(bins):
        members = index == b
        if members.any():
            curve.append({"low": b / bins, "high": (b + 1) / bins, "tracks": int(members.sum()),
                          "confidence": float(confidence[members].mean()), "accuracy": float(right[members].mean())})
    return curve


def expected_calibration_error(confidence: np.ndarray, right: np.ndarray, *, bins: int = RELIABILITY_BINS) -> float:
    """ECE: the track-weighted mean gap between confidence and accuracy over the reliability bins."""
    curve = reliability(confidence, right, bins=bins)
    total = sum(b["tracks"] for b in curve)
    return float(sum(b["tracks"] * abs(b["confidence"] - b["accuracy"]) for b in curve) / max(total, 1))


def summary(confidence: np.ndarray, right: np.ndarray, flag_below: float) -> dict:
    """What metrics.json, the model card and the report say of a set of tracks' confidences."""
    confidence, right = np.asarray(confidence, np.float64), np.asarray(right, bool)
    flagged = confidence < flag_below
    return {
        "tracks": int(len(right)),
        "accuracy": float(right.mean()) if len(right) else 0.0,
        "mean_confidence": float(confidence.mean()) if len(right) else 0.0,
        "ece": expected_calibration_error(confidence, right),
        "reliability": reliability(confidence, right),
        "flag_below": flag_below,
        "flagged_share": float(flagged.mean()) if len(right) else 0.0,
        "wrong_flagged": float(flagged[~right].mean()) if (~right).any() else None,
    }
