"""log_mel(samples) -> [frames, n_mels] in dB, with a fixed reference.

The STFT is computed in float32 with SciPy's FFT on strided frames. It matches
librosa.feature.melspectrogram(center=True, pad_mode='constant') followed by
librosa.power_to_db(ref=db_ref_power, top_db=None) to within 0.05 dB (a test checks it), and
takes about half the time (11 vs 22 ms per 30 s of audio on this project's CI machine), which
matters because it runs on every segment of every track.

The musicnn configuration (schemas.features.MUSICNN) swaps the dB compression for musicnn's
log10(1 + 10000 power) and pads with the mirrored signal; it matches the original package's
librosa front end the same way (tests/test_mel.py).
"""

from __future__ import annotations

import dataclasses

import librosa
import numpy as np
import scipy.fft
import scipy.sparse

from schemas.features import FeatureConfig

_AMIN = 1e-10  # power floor before the log: -100 dB re 1.0, as librosa.power_to_db
_FLOAT16_MAX = float(np.finfo(np.float16).max)


@dataclasses.dataclass(frozen=True)
class MelBasis:
    """Everything log_mel needs that depends only on the config: build it once per worker."""

    cfg: FeatureConfig
    filters: scipy.sparse.csr_matrix  # float32 [n_mels, 1 + n_fft // 2], Slaney-normalized
    window: np.ndarray  # float32 periodic Hann [n_fft]


def mel_basis(cfg: FeatureConfig) -> MelBasis:
    filters = librosa.filters.mel(
        sr=cfg.sample_rate_hz, n_fft=cfg.n_fft, n_mels=cfg.n_mels, fmin=cfg.fmin_hz, fmax=cfg.fmax_hz
    )
    window = librosa.filters.get_window("hann", cfg.n_fft, fftbins=True)
    # Each triangular filter spans a few FFT bins (1.5% of the matrix is non-zero at the default
    # config): a sparse product is 3x faster than the dense one and gives the same sums.
    return MelBasis(cfg, scipy.sparse.csr_matrix(filters.astype(np.float32)), window.astype(np.float32))


def log_mel(samples: np.ndarray, *, basis: MelBasis) -> np.ndarray:
    """Returns float32 [frames, n_mels] log-mel power, compressed as the config's `log_scale`
    says: dB re `db_ref_power` floored at `db_floor`, or musicnn's log10(1 + 10000 power).
    `samples` is mono float32 at the config's rate."""
    cfg = basis.cfg
    half = cfg.n_fft // 2
    padded = np.pad(samples.astype(np.float32, copy=False), half, mode=cfg.pad_mode)
    frames = np.lib.stride_tricks.sliding_window_view(padded, cfg.n_fft)[:: cfg.hop_length]
    spectrum = scipy.fft.rfft(frames * basis.window, axis=1, overwrite_x=True)
    power = np.square(spectrum.real) + np.square(spectrum.imag)
    mel = np.asarray(basis.filters @ power.T).T  # [frames, n_mels]
    if cfg.log_scale == "log1p10k":
        # musicnn rounded the power to float16 before the log; the log itself in float32 (in float16,
        # 10000 x overflows for loud bands). Powers past float16's range saturate instead of becoming inf.
        rounded = np.minimum(mel, _FLOAT16_MAX).astype(np.float16).astype(np.float32)
        return np.log10(1.0 + 10000.0 * rounded).astype(np.float32, copy=False)
    db = 10.0 * np.log10(np.maximum(mel, _AMIN) / cfg.db_ref_power)
    return np.maximum(db, cfg.db_floor).astype(np.float32, copy=False)
