"""check(decoded audio) -> TrackHealth: the faults metered during the decode, their flags, and the
track's Chromaprint fingerprint; and the DoFn around it (one per tag worker, beside the descriptors)."""

from __future__ import annotations

from collections.abc import Iterator

import apache_beam as beam
import numpy as np

from schemas.health import TrackHealth
from transforms import chromaprint, health
from transforms.records import DecodedTrack


def check(samples: np.ndarray, rate_hz: int, measured: health.Health | None) -> TrackHealth:
    """Health columns of one track from its mono samples (for the fingerprint) and the decode's meter."""
    words = chromaprint.fingerprint(samples, rate_hz)
    if measured is None:
        return TrackHealth(fingerprint=tuple(int(w) for w in words))
    return TrackHealth(
        health_flags=tuple(health.flags(measured)), clipped_runs=measured.clipped_runs,
        head_silence_s=round(measured.head_silence_s, 2), tail_silence_s=round(measured.tail_silence_s, 2),
        longest_gap_s=round(measured.longest_gap_s, 2), dc_offset=round(measured.dc_offset, 5),
        dual_mono=measured.dual_mono,
        spectral_cutoff_hz=None if measured.spectral_cutoff_hz is None else round(measured.spectral_cutoff_hz, 1),
        fingerprint=tuple(int(w) for w in words))


class CheckTrack(beam.DoFn):
    """DecodedTrack -> (track_id, TrackHealth)."""

    def process(self, track: DecodedTrack) -> Iterator[tuple[str, TrackHealth]]:
        audio = track.audio
        yield track.entry.track_id, check(audio.samples, audio.sample_rate_hz, audio.health)


class FingerprintTrack(beam.DoFn):
    """DecodedTrack -> (track_id, Chromaprint words as uint32): featurize's fingerprint, without the checks."""

    def process(self, track: DecodedTrack) -> Iterator[tuple[str, np.ndarray]]:
        yield track.entry.track_id, chromaprint.fingerprint(track.audio.samples, track.audio.sample_rate_hz)
