"""describe(decoded audio) -> Descriptors: tempo, key and loudness of one track, and the DoFn around it.

Tempo and key are computed from the mono samples the tagger decodes anyway (at the model's rate:
16 kHz for musicnn); loudness was measured during that same decode on the file's own channels and
rate (transforms.audio, transforms.loudness), because BS.1770 weighs channels and a downmix would
change the figure. Nothing decodes twice.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import apache_beam as beam
import numpy as np
import threadpoolctl

from schemas.descriptors import Descriptors
from transforms import key as key_estimation
from transforms import tempo as tempo_estimation
from transforms.loudness import Loudness
from transforms.records import DecodedTrack


@dataclasses.dataclass(frozen=True)
class DescriptorBasis:
    """Everything describe() needs that depends only on the sample rate: build it once per worker."""

    onsets: tempo_estimation.OnsetBasis
    chroma: key_estimation.ChromaBasis


def descriptor_basis(rate_hz: int) -> DescriptorBasis:
    return DescriptorBasis(tempo_estimation.onset_basis(rate_hz), key_estimation.chroma_basis(rate_hz))


def describe(samples: np.ndarray, loudness: Loudness | None, basis: DescriptorBasis) -> Descriptors:
    """Descriptors of one track from its mono samples (at the basis's rate) and its loudness."""
    tempo = tempo_estimation.estimate_tempo(samples, basis.onsets)
    key = key_estimation.estimate_key(samples, basis.chroma)
    notes = []
    if tempo.bpm is None:
        notes.append(f"bpm: {tempo.reason}")
    if key.key is None:
        notes.append(f"key: {key.reason}")
    if loudness is None:
        loudness = Loudness(None, None, None, None, "not measured for this file's format")
    if loudness.reason:
        missing = [name for name in ("loudness_lufs", "loudness_range_lu", "true_peak_dbtp", "loudness_variation_lu")
                   if getattr(loudness, name) is None]
        notes.append(f"{', '.join(missing)}: {loudness.reason}")
    return Descriptors(
        bpm=tempo.bpm, bpm_confidence=tempo.bpm_confidence,
        bpm_alternatives=tempo.bpm_alternatives if tempo.bpm is not None else None,
        key=key.key, key_confidence=key.key_confidence, camelot=key.camelot,
        loudness_lufs=_rounded(loudness.loudness_lufs), loudness_range_lu=_rounded(loudness.loudness_range_lu),
        true_peak_dbtp=_rounded(loudness.true_peak_dbtp),
        loudness_variation_lu=_rounded(loudness.loudness_variation_lu),
        onset_rate=tempo.onset_rate, descriptor_notes="; ".join(notes) or None)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(float(value), 3)


class DescribeTrack(beam.DoFn):
    """DecodedTrack -> (track_id, Descriptors)."""

    def __init__(self, sample_rate_hz: int):
        self._rate = sample_rate_hz

    def setup(self) -> None:
        self._basis = descriptor_basis(self._rate)
        # One track per call is small work: BLAS threads would only contend with the other workers.
        threadpoolctl.threadpool_limits(limits=1, user_api="blas")

    def describe(self, track: DecodedTrack) -> Descriptors:
        return describe(track.audio.samples, track.audio.loudness, self._basis)

    def process(self, track: DecodedTrack) -> Iterator[tuple[str, Descriptors]]:
        yield track.entry.track_id, self.describe(track)
