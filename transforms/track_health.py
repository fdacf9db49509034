"""check(decoded audio) -> TrackHealth: the faults metered during the decode, their flags, and the
track's Chromaprint fingerprint; and the DoFn around it (one per tag worker, beside the descriptors)."""

from __future__ import annotations

from collections.abc import Iterator

import apache_beam as beam
import numpy as np

from schemas.health import TrackHealth
from transforms import chromaprint, health
from transforms.records import DecodedTrack


def check(samples: np.ndarray, rate_hz: int, measured: health.Health | None,
          thresholds: health.Thresholds = health.Thresholds()) -> TrackHealth:
    """Health columns of one track from its mono samples (for the fingerprint) and the decode's meter."""
    words = chromaprint.fingerprint(samples, rate_hz)
    if measured is None:
        return TrackHealth(fingerprint=tuple(int(w) for w in words))
    return TrackHealth(
        health_flags=tuple(health.flags(measured, thresholds)), clipped_runs=measured.clipped_runs,
        head_silence_s=round(measured.head_silence_s, 2), tail_silence_s=round(measured.tail_silence_s, 2),
        longest_gap_s=round(measured.longest_gap_s, 2), dc_offset=round(measured.dc_offset, 5),
        dual_mono=measured.dual_mono,
        spectral_cutoff_hz=None if measured.spectral_cutoff_hz is None else round(measured.spectral_cutoff_hz, 1),
        fingerprint=tuple(int(w) for w in words))


class CheckTrack(beam.DoFn):
    """DecodedTrack -> (track_id, TrackHealth)."""

    def __init__(self, thresholds: health.Thresholds | None = None):
        self._thresholds = thresholds or health.Thresholds()

    def process(self, track: DecodedTrack) -> Iterator[tuple[str, TrackHealth]]:
        audio = track.audio
        yield track.entry.track_id, check(audio.samples, audio.sample_rate_hz, audio.health, self._thresholds)


class FingerprintTrack(beam.DoFn):
    """DecodedTrack -> (track_id, Chromaprint words as uint32): featurize's fingerprint, without the checks."""

    def process(self, track: DecodedTrack) -> Iterator[tuple[str, np.ndarray]]:
        yield track.entry.track_id, chromaprint.fingerprint(track.audio.samples, track.audio.sample_rate_hz)


class _FencesFn(beam.CombineFn):
    """Integrated loudness of every track of a run -> its Tukey fences (health.loudness_fences), or None."""

    def __init__(self, thresholds: health.Thresholds):
        self._thresholds = thresholds

    def create_accumulator(self) -> list[float]:
        return []

    def add_input(self, values: list[float], value: float) -> list[float]:
        values.append(value)
        return values

    def merge_accumulators(self, accumulators) -> list[float]:
        return [value for values in accumulators for value in values]

    def extract_output(self, values: list[float]) -> tuple[float, float] | None:
        return health.loudness_fences(sorted(values), self._thresholds)


def with_loudness_outlier_flag(row: dict, fences: tuple[float, float] | None) -> dict:
    """A tag row, with "loudness outlier" among its health flags when its loudness is outside the fences."""
    loudness = row.get("loudness_lufs")
    if fences is None or row.get("health_flags") is None or loudness is None or fences[0] <= loudness <= fences[1]:
        return row
    return {**row, "health_flags": [*row["health_flags"], "loudness outlier"]}


class FlagLoudnessOutliers(beam.PTransform):
    """Tag rows -> the same rows, those far louder or quieter than the rest of the run flagged."""

    def __init__(self, thresholds: health.Thresholds | None = None):
        super().__init__()
        self._thresholds = thresholds or health.Thresholds()

    def expand(self, rows):
        fences = (rows
                  | "Loudness" >> beam.FlatMap(
                      lambda row: [row["loudness_lufs"]]
                      if row.get("loudness_lufs") is not None and row.get("health_flags") is not None else [])
                  | "Fences" >> beam.CombineGlobally(_FencesFn(self._thresholds)))
        return rows | "FlagOutliers" >> beam.Map(with_loudness_outlier_flag, beam.pvalue.AsSingleton(fences))
