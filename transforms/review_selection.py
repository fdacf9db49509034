"""Which tracks a person should look at first: pure functions, no Beam.

A correction teaches the model most where it is unsure and where it has seen little like the track.
The pick is greedy: first the track most likely wrong (lowest confidence), then each time the track
maximizing

    (1 - confidence) x (distance to the nearest track already picked, cosine, in [0, 1])

so that ten picks cover ten kinds of doubtful music rather than ten copies of one (uncertainty
sampling weighted by diversity, a standard active-learning rule). Flagged tracks are not forced
first: a confident, unflagged track far from everything picked can still be worth a look.
"""

from __future__ import annotations

import numpy as np


def pick(confidence: np.ndarray, embeddings: np.ndarray, limit: int,
         reviewed: np.ndarray | None = None) -> list[tuple[int, str]]:
    """Row indices in the order a reviewer should see them, each with why it was picked.
    `confidence` [n] in [0, 1]; `embeddings` [n, dim] (unit or not); `reviewed` [m, dim]: embeddings of
    tracks a person already labelled, which count as picked (their kind of music is covered)."""
    confidence = np.asarray(confidence, np.float64)
    n = len(confidence)
    if n == 0 or limit < 1:
        return []
    vectors = np.asarray(embeddings, np.float64)
    vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    doubt = 1.0 - np.clip(confidence, 0.0, 1.0)
    distance = np.ones(n)  # to the nearest picked track: 1 (as far as can be) before any pick
    if reviewed is not None and len(reviewed):
        known = np.asarray(reviewed, np.float64)
        known = known / np.maximum(np.linalg.norm(known, axis=1, keepdims=True), 1e-12)
        distance = ((1.0 - vectors @ known.T) / 2.0).min(axis=1)
    chosen: list[tuple[int, str]] = []
    available = np.ones(n, bool)
    for _ in range(min(limit, n)):
        score = np.where(available, doubt * distance + 1e-9 * doubt, -np.inf)  # ties: the more doubtful
        best = int(np.argmax(score))
        chosen.append((best, _why(doubt[best], distance[best], first=not chosen and reviewed is None)))
        available[best] = False
        distance = np.minimum(distance, (1.0 - vectors @ vectors[best]) / 2.0)
    return chosen


def _why(doubt: float, distance: float, *, first: bool) -> str:
    if first:
        return f"most likely wrong ({doubt:.0%} chance)"
    return f"{doubt:.0%} chance wrong, unlike the tracks above (distance {distance:.2f})"
