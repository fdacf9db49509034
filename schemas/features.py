"""FeatureConfig: every parameter that shapes a log-mel example, and its version.

The version is a content hash of the parameters, written next to the data (metadata.json) and
into exported models, so that the trainer and the tagger can refuse data or models computed with
different parameters instead of silently producing nonsense.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

# Bump when the meaning of an existing field changes (not when a field is added: the hash covers it).
_SCHEMA_REVISION = 1

# log_scale values: "db" is 10 log10(power / db_ref_power) floored at db_floor (cattag's own models);
# "log1p10k" is log10(1 + 10000 power) with the power rounded to float16 first, the compression
# musicnn was trained with (its batch_data casts the mel power to float16 before the log).
LOG_SCALES = ("db", "log1p10k")
PAD_MODES = ("constant", "reflect")
# Fields added after revision 1 leave the version of a config that keeps their first value unchanged,
# so data and models written before the field existed stay readable.
_ADDED_FIELD_DEFAULTS = {"log_scale": "db", "pad_mode": "constant"}


class FeatureConfigMismatch(ValueError):
    """Data, model and code disagree on the feature parameters."""


@dataclasses.dataclass(frozen=True)
class FeatureConfig:
    """Parameters of the log-mel front end. Changing any of them changes `version`.

    The dB reference is fixed (`db_ref_power`), never the per-file maximum, so that a quiet track
    stays quiet and values compare across tracks and catalogues.
    """

    sample_rate_hz: int = 22050
    n_fft: int = 2048
    hop_length: int = 512
    n_mels: int = 128
    fmin_hz: float = 0.0
    fmax_hz: float = 11025.0
    segment_s: float = 3.0
    db_ref_power: float = 1.0
    db_floor: float = -100.0
    log_scale: str = "db"
    # How the STFT pads a segment's edges (frames are centred): zeros, or the signal mirrored, as
    # librosa < 0.10 did by default and musicnn's training data therefore had.
    pad_mode: str = "constant"

    def __post_init__(self) -> None:
        problems = []
        if not 4000 <= self.sample_rate_hz <= 192000:
            problems.append(f"sample_rate_hz={self.sample_rate_hz} is outside 4000..192000")
        if self.n_fft < 64 or self.n_fft & (self.n_fft - 1):
            problems.append(f"n_fft={self.n_fft} must be a power of two >= 64")
        if not 0 < self.hop_length <= self.n_fft:
            problems.append(f"hop_length={self.hop_length} must be in 1..n_fft")
        if not 8 <= self.n_mels <= 512:
            problems.append(f"n_mels={self.n_mels} is outside 8..512")
        if not 0 <= self.fmin_hz < self.fmax_hz <= self.sample_rate_hz / 2:
            problems.append(
                f"need 0 <= fmin_hz ({self.fmin_hz}) < fmax_hz ({self.fmax_hz}) <= "
                f"sample_rate_hz/2 ({self.sample_rate_hz / 2})"
            )
        if self.segment_s * self.sample_rate_hz < self.n_fft:
            problems.append(f"segment_s={self.segment_s} is shorter than one FFT window")
        if self.log_scale not in LOG_SCALES:
            problems.append(f"log_scale={self.log_scale!r} must be one of {LOG_SCALES}")
        if self.pad_mode not in PAD_MODES:
            problems.append(f"pad_mode={self.pad_mode!r} must be one of {PAD_MODES}")
        if self.db_ref_power <= 0:
            problems.append(f"db_ref_power={self.db_ref_power} must be positive")
        if problems:
            raise ValueError("invalid FeatureConfig: " + "; ".join(problems))

    @property
    def segment_samples(self) -> int:
        return round(self.segment_s * self.sample_rate_hz)

    @property
    def n_frames(self) -> int:
        """Frames per segment with centred frames (the signal is padded by n_fft/2 each side)."""
        return 1 + self.segment_samples // self.hop_length

    @property
    def mel_shape(self) -> tuple[int, int]:
        return (self.n_frames, self.n_mels)

    @property
    def version(self) -> str:
        """A short content hash: equal parameters give equal versions on every machine."""
        fields = {k: v for k, v in dataclasses.asdict(self).items()
                  if not (k in _ADDED_FIELD_DEFAULTS and v == _ADDED_FIELD_DEFAULTS[k])}
        canonical = json.dumps({"revision": _SCHEMA_REVISION, **fields}, sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "version": self.version}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureConfig:
        """Rebuilds a config and checks that its recorded version matches its parameters."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - fields - {"version"}
        if unknown:
            raise FeatureConfigMismatch(
                f"feature config has fields this cattag does not know: {sorted(unknown)}; "
                "it was written by a newer version"
            )
        cfg = cls(**{k: v for k, v in data.items() if k in fields})
        recorded = data.get("version")
        if recorded is not None and recorded != cfg.version:
            raise FeatureConfigMismatch(
                f"feature config records version {recorded} but its parameters hash to "
                f"{cfg.version}: it was edited by hand or written by an incompatible cattag"
            )
        return cfg


# The input of musicnn (Pons and Serra, 2019): 16 kHz, 512-point FFT, hop 256, 96 Slaney mel bands
# up to 8 kHz, log10(1 + 10000 power). Its patches are 187 frames (3 s); 2.976 s of samples give 187
# centred frames. Every cattag model built on the musicnn backbone expects exactly this.
MUSICNN = FeatureConfig(sample_rate_hz=16000, n_fft=512, hop_length=256, n_mels=96, fmin_hz=0.0, fmax_hz=8000.0,
                        segment_s=2.976, log_scale="log1p10k", pad_mode="reflect")
# Named configs for --feature-config; "musicnn" is featurize's default since the default model is
# a head on the musicnn backbone.
PRESETS = {"musicnn": MUSICNN, "cattag-v1": FeatureConfig()}
DEFAULT_PRESET = "musicnn"


def check_compatible(expected: FeatureConfig, found: FeatureConfig, *, what: str) -> None:
    """Raises FeatureConfigMismatch naming every differing parameter."""
    if expected.version == found.version:
        return
    diffs = [
        f"{f.name}: {getattr(found, f.name)!r} (expected {getattr(expected, f.name)!r})"
        for f in dataclasses.fields(FeatureConfig)
        if getattr(found, f.name) != getattr(expected, f.name)
    ]
    raise FeatureConfigMismatch(
        f"{what} was computed with feature config {found.version}, expected {expected.version}; "
        "differences: " + ", ".join(diffs)
    )


SHORT_TRACK_POLICIES = ("pad", "reject")


@dataclasses.dataclass(frozen=True)
class SegmentPolicy:
    """How tracks are cut into segments. Not part of the feature version: a model trained on
    segments taken with one hop can tag segments taken with another."""

    hop_s: float = 3.0
    max_segments: int = 20
    short_tracks: str = "pad"
    silence_floor_dbfs: float = -60.0
    max_track_s: float = 1800.0

    def __post_init__(self) -> None:
        problems = []
        if self.hop_s <= 0:
            problems.append(f"hop_s={self.hop_s} must be positive")
        if self.max_segments < 1:
            problems.append(f"max_segments={self.max_segments} must be at least 1")
        if self.short_tracks not in SHORT_TRACK_POLICIES:
            problems.append(f"short_tracks={self.short_tracks!r} must be one of {SHORT_TRACK_POLICIES}")
        if self.max_track_s <= 0:
            problems.append(f"max_track_s={self.max_track_s} must be positive")
        if problems:
            raise ValueError("invalid SegmentPolicy: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
