"""Loudness per ITU-R BS.1770-4 / EBU R128, measured while a file decodes, on its own channels and rate.

`LoudnessMeter` takes the decoder's blocks (frames x channels, float32, any rate) and keeps only
one weighted power per 100 ms and the largest oversampled sample seen, so a long file costs no
more memory than a short one and nothing is decoded twice. `result()` gives:

- integrated loudness in LUFS (BS.1770-4): K-weighted mean square per channel, channels summed with
  the standard's weights (1.0 front, 1.41 surround, LFE left out; a mono file is one channel, so no
  +3 LU for "dual mono"), 400 ms blocks every 100 ms, gated at -70 LUFS and then 10 LU below the
  mean of the blocks that passed;
- loudness range in LU (EBU Tech 3342): 3 s short-term loudness every 100 ms, gated at -70 LUFS and
  20 LU below their mean, the 95th percentile minus the 10th;
- true peak in dBTP (EBU Tech 3341 / BS.1770-4 Annex 2): the largest absolute sample after 4x
  oversampling (2x at 96 kHz and above, none from 192 kHz), as libebur128 and the standard's
  reference meter do;
- loudness variation in LU: the mean absolute difference between each gated 400 ms block's
  loudness and the integrated loudness (how much the level moves inside the track; cattag's own
  measure, not Essentia's "dynamic complexity").

Values a track cannot have (silence, a file shorter than one block) are None with a reason.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import soxr

# BS.1770-4 channel weights by channel count, in the WAV / SMPTE channel order
# (L R C LFE Ls Rs, then back surrounds). Other counts weigh every channel 1.0.
_SURROUND = 1.41  # +1.5 dB
CHANNEL_WEIGHTS = {
    1: (1.0,),
    2: (1.0, 1.0),
    3: (1.0, 1.0, 1.0),
    4: (1.0, 1.0, _SURROUND, _SURROUND),  # quad: L R Ls Rs
    5: (1.0, 1.0, 1.0, _SURROUND, _SURROUND),  # L R C Ls Rs
    6: (1.0, 1.0, 1.0, 0.0, _SURROUND, _SURROUND),  # 5.1
    8: (1.0, 1.0, 1.0, 0.0, _SURROUND, _SURROUND, _SURROUND, _SURROUND),  # 7.1
}
SEGMENT_S = 0.1  # gating blocks step by 100 ms (75% overlap of 400 ms)
MOMENTARY_SEGMENTS = 4  # 400 ms
SHORT_TERM_SEGMENTS = 30  # 3 s
ABSOLUTE_GATE_LUFS = -70.0
RELATIVE_GATE_LU = -10.0
RANGE_RELATIVE_GATE_LU = -20.0
RANGE_PERCENTILES = (10.0, 95.0)
_OFFSET = -0.691  # BS.1770's constant: a 997 Hz sine at 0 dBFS in one channel reads -3.01 LUFS


@dataclasses.dataclass(frozen=True)
class Loudness:
    loudness_lufs: float | None
    loudness_range_lu: float | None
    true_peak_dbtp: float | None
    loudness_variation_lu: float | None
    reason: str  # why a value is None; "" when all are set


def k_weighting(rate_hz: int) -> tuple[np.ndarray, np.ndarray]:
    """BS.1770's K-weighting (high shelf, then high pass) as one filter at any sample rate.

    The standard tabulates coefficients at 48 kHz only; these are its analogue prototypes put
    through the bilinear transform, as libebur128 does, which reproduces the table at 48 kHz.
    """
    f0, gain_db, q = 1681.974450955533, 3.999843853973347, 0.7071752369554196
    k = math.tan(math.pi * f0 / rate_hz)
    vh = 10.0 ** (gain_db / 20.0)
    vb = vh ** 0.4996667741545416
    a0 = 1.0 + k / q + k * k
    shelf_b = np.array([(vh + vb * k / q + k * k) / a0, 2.0 * (k * k - vh) / a0, (vh - vb * k / q + k * k) / a0])
    shelf_a = np.array([1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0])
    f0, q = 38.13547087602444, 0.5003270373238773
    k = math.tan(math.pi * f0 / rate_hz)
    a0 = 1.0 + k / q + k * k
    pass_b = np.array([1.0, -2.0, 1.0])
    pass_a = np.array([1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0])
    return np.convolve(shelf_b, pass_b), np.convolve(shelf_a, pass_a)


def oversampling(rate_hz: int) -> int:
    return 4 if rate_hz < 96_000 else 2 if rate_hz < 192_000 else 1


class LoudnessMeter:
    """Streaming BS.1770-4 meter: `add()` blocks of frames x channels in order, then `result()`."""

    def __init__(self, rate_hz: int, channels: int):
        if rate_hz <= 0 or channels <= 0:
            raise ValueError(f"a loudness meter needs a positive rate and channel count, got {rate_hz} Hz, {channels}")
        self.rate_hz = rate_hz
        self.channels = channels
        self._weights = np.asarray(CHANNEL_WEIGHTS.get(channels, (1.0,) * channels), dtype=np.float64)
        # Imported here, not at the top: SciPy's signal module costs featurize workers (which import this
        # module through transforms.audio but never meter) about half a second of start-up.
        from scipy.signal import lfilter  # pylint: disable=import-outside-toplevel

        self._lfilter = lfilter
        self._b, self._a = k_weighting(rate_hz)
        self._state = np.zeros((len(self._a) - 1, channels))
        self._segment = max(1, round(SEGMENT_S * rate_hz))
        self._pending = np.zeros(0)  # weighted power of frames not yet in a whole segment
        self._segments: list[np.ndarray] = []  # mean weighted power per 100 ms
        factor = oversampling(rate_hz)
        self._upsampler = (
            soxr.ResampleStream(rate_hz, rate_hz * factor, channels, dtype="float32", quality="HQ")
            if factor > 1 else None
        )
        self._peak = 0.0

    def add(self, block: np.ndarray) -> None:
        block = np.asarray(block, dtype=np.float32)
        if block.ndim == 1:
            block = block[:, None]
        if block.shape[1] != self.channels:
            raise ValueError(f"expected {self.channels} channels, got {block.shape[1]}")
        if not len(block):
            return
        filtered, self._state = self._lfilter(self._b, self._a, block, axis=0, zi=self._state)
        power = np.square(filtered) @ self._weights
        power = np.concatenate([self._pending, power]) if self._pending.size else power
        whole = len(power) // self._segment * self._segment
        if whole:
            self._segments.append(power[:whole].reshape(-1, self._segment).mean(axis=1))
        self._pending = power[whole:]
        self._track_peak(self._upsampler.resample_chunk(block) if self._upsampler else block)

    def _track_peak(self, samples: np.ndarray) -> None:
        if samples.size:
            self._peak = max(self._peak, float(np.max(np.abs(samples))))

    def result(self) -> Loudness:
        if self._upsampler is not None:
            self._track_peak(self._upsampler.resample_chunk(np.zeros((0, self.channels), np.float32), last=True))
            self._upsampler = None
        segments = np.concatenate(self._segments) if self._segments else np.zeros(0)
        true_peak = 20.0 * math.log10(self._peak) if self._peak > 0 else None
        return measure(segments, true_peak)


def measure(segment_power: np.ndarray, true_peak_dbtp: float | None) -> Loudness:
    """The R128 figures from the weighted mean power of consecutive 100 ms segments."""
    momentary = _blocks(segment_power, MOMENTARY_SEGMENTS)
    if not momentary.size:
        return Loudness(None, None, true_peak_dbtp, None, "shorter than one 400 ms loudness block")
    integrated, gated = _gated_mean(momentary, RELATIVE_GATE_LU)
    if integrated is None:
        return Loudness(None, None, true_peak_dbtp, None, "silent (no 400 ms block above -70 LUFS)")
    variation = float(np.mean(np.abs(_lufs(gated) - integrated)))
    short_term = _blocks(segment_power, SHORT_TERM_SEGMENTS)
    _, kept = _gated_mean(short_term, RANGE_RELATIVE_GATE_LU)
    if kept is None or not kept.size:
        return Loudness(integrated, None, true_peak_dbtp, variation, "shorter than one 3 s short-term block")
    low, high = _nearest_rank(np.sort(_lufs(kept)), RANGE_PERCENTILES)
    return Loudness(integrated, high - low, true_peak_dbtp, variation, "")


def _blocks(segment_power: np.ndarray, length: int) -> np.ndarray:
    """Mean power of every run of `length` consecutive segments (blocks overlapping by all but one)."""
    if len(segment_power) < length:
        return np.zeros(0)
    sums = np.cumsum(np.concatenate([[0.0], segment_power]))
    return (sums[length:] - sums[:-length]) / length


def _lufs(power: np.ndarray | float) -> np.ndarray | float:
    with np.errstate(divide="ignore"):
        return _OFFSET + 10.0 * np.log10(power)


def _gated_mean(power: np.ndarray, relative_lu: float) -> tuple[float | None, np.ndarray | None]:
    """BS.1770's two gates: the absolute one, then `relative_lu` below the mean of what passed it."""
    audible = power[_lufs(power) > ABSOLUTE_GATE_LUFS]
    if not audible.size:
        return None, None
    threshold = _lufs(float(audible.mean())) + relative_lu
    kept = audible[_lufs(audible) > threshold]
    return float(_lufs(float(kept.mean()))), kept


def _nearest_rank(ordered: np.ndarray, percentiles: tuple[float, ...]) -> tuple[float, ...]:
    # libebur128's rule: index (n - 1) * p / 100, rounded to nearest.
    last = len(ordered) - 1
    return tuple(float(ordered[int(last * p / 100.0 + 0.5)]) for p in percentiles)
