"""Cutting a track into fixed-length segments, and the silence test."""

from __future__ import annotations

import dataclasses

import numpy as np


class SegmentError(Exception):
    """A decoded track yields no usable segment."""


class SilentTrack(SegmentError):
    """Every segment is below the silence floor: a failure for training data, but a tagger still
    owes the track a row (flagged for review)."""

    def __init__(self, message: str, n_silent: int):
        super().__init__(message)
        self.n_silent = n_silent


@dataclasses.dataclass(frozen=True)
class SegmentCut:
    segments: list[tuple[int, np.ndarray]]  # (index on the hop grid, samples)
    n_silent: int  # segments dropped for being below the silence floor


def rms_dbfs(samples: np.ndarray) -> float:
    """RMS level in dB relative to full scale (a full-scale sine is -3 dBFS)."""
    power = float(np.mean(np.square(samples, dtype=np.float64))) if samples.size else 0.0
    return 10.0 * np.log10(max(power, 1e-20))


def segment_indices(n_samples: int, *, segment_samples: int, hop_samples: int, max_segments: int) -> list[int]:
    """Indices on the hop grid of the segments to keep.

    When a track has more candidate segments than `max_segments`, the kept ones are spread evenly
    over the whole track rather than taken from its start, so long tracks are not represented by
    their intros alone.
    """
    if n_samples < segment_samples:
        return [0]
    count = 1 + (n_samples - segment_samples) // hop_samples
    if count <= max_segments:
        return list(range(count))
    return sorted({int(i) for i in np.linspace(0, count - 1, max_segments).round()})


def cut_segments(
    samples: np.ndarray,
    *,
    segment_samples: int,
    hop_samples: int,
    max_segments: int,
    pad_short: bool,
    silence_floor_dbfs: float,
) -> SegmentCut:
    """Cuts `samples` into segments, dropping silent ones.

    Raises:
        SegmentError: the track is shorter than one segment and `pad_short` is false, or every
            segment is below `silence_floor_dbfs` (then SilentTrack).
    """
    if len(samples) < segment_samples:
        if not pad_short:
            raise SegmentError(
                f"too short: {len(samples)} samples, one segment needs {segment_samples} "
                "(use --short-tracks pad to pad it with silence)"
            )
        samples = np.pad(samples, (0, segment_samples - len(samples)))
    kept, silent = [], 0
    for index in segment_indices(
        len(samples), segment_samples=segment_samples, hop_samples=hop_samples, max_segments=max_segments
    ):
        start = index * hop_samples
        segment = samples[start:start + segment_samples]
        if rms_dbfs(segment) < silence_floor_dbfs:
            silent += 1
        else:
            kept.append((index, segment))
    if not kept:
        raise SilentTrack(
            f"silent: all {silent} segments are below the {silence_floor_dbfs:g} dBFS silence floor", silent
        )
    return SegmentCut(kept, silent)
