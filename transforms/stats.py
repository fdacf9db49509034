"""Per-mel-bin mean and standard deviation, mergeable across workers (Chan et al.'s update)."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class Moments:
    """Count, mean and sum of squared deviations per mel bin, in float64."""

    count: int = 0
    mean: np.ndarray | None = None
    m2: np.ndarray | None = None

    def add(self, frames: np.ndarray) -> Moments:
        """Adds a [frames, n_mels] block."""
        block = frames.astype(np.float64)
        mean = block.mean(axis=0)
        return self.merge(Moments(len(block), mean, ((block - mean) ** 2).sum(axis=0)))

    def merge(self, other: Moments) -> Moments:
        if other.count == 0:
            return self
        if self.count == 0:
            return other
        count = self.count + other.count
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.count / count)
        m2 = self.m2 + other.m2 + delta**2 * (self.count * other.count / count)
        return Moments(count, mean, m2)

    def to_dict(self) -> dict[str, object]:
        if self.count == 0:
            return {"frames": 0, "mean": [], "std": []}
        return {
            "frames": self.count,
            "mean": [round(float(v), 6) for v in self.mean],
            "std": [round(float(v), 6) for v in np.sqrt(self.m2 / self.count)],
        }
