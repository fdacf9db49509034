"""The records that flow between the featurize steps, one per stage (audio -> segments -> log-mels).

They live inside one job; what one command hands to the next is declared in schemas/.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from transforms import audio
from transforms.catalogue import CatalogueEntry
from transforms.stats import Moments


@dataclasses.dataclass(frozen=True)
class DecodedTrack:
    entry: CatalogueEntry
    audio: audio.DecodedAudio


@dataclasses.dataclass(frozen=True)
class Segment:
    entry: CatalogueEntry
    index: int
    samples: np.ndarray


@dataclasses.dataclass(frozen=True)
class MelSegment:
    entry: CatalogueEntry
    index: int
    mel: np.ndarray  # float32 [frames, n_mels]


@dataclasses.dataclass(frozen=True)
class TrackSummary:
    entry: CatalogueEntry
    duration_s: float
    n_segments: int
    n_silent: int


@dataclasses.dataclass(frozen=True)
class TrackMelMoments:
    """The log-mel moments of some of one track's segments (a bundle's): what the mel statistics need of
    a track, a few kB where its segments are hundreds."""
    entry: CatalogueEntry
    moments: Moments
