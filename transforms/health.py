"""Technical faults a distributor rejects, measured while a file decodes, on its own channels and rate.

`HealthMeter` takes the decoder's blocks (frames x channels, float32) as the loudness meter does and
keeps a few numbers per channel, one level per 100 ms and one averaged spectrum, so memory does not
grow with the file. `result()` gives each measured value, and `flags(health)` the faults with the
thresholds below (each a documented default a caller may override):

- clipping: runs of at least CLIP_RUN consecutive samples at full scale (|x| >= CLIP_LEVEL), counted per
  channel; flagged from CLIPPED_RUNS runs (one run is an accident of mastering, dozens are clipping);
- head / tail silence: leading or trailing audio below SILENCE_DBFS (RMS per 100 ms, loudest channel)
  longer than EDGE_SILENCE_S;
- gaps: the longest stretch below SILENCE_DBFS inside the track, flagged from GAP_S (a drop-out);
- DC offset: the largest |mean| of a channel, flagged above DC_LEVEL (1% of full scale, -40 dBFS);
- dual mono: a two-channel file whose channels differ by less than DUAL_MONO_DB below their level;
- spectral cutoff: the top of the audible averaged spectrum (within CUTOFF_RANGE_DB of its peak) when
  the level falls off a cliff there (CUTOFF_DROP_DB within 2 kHz); flagged when below CUTOFF_SHARE of
  the file's Nyquist frequency (a lossy source saved as lossless, or audio up-sampled from a lower rate).

Two more flags come from the descriptors' loudness, not measured again here: "true peak", the BS.1770 true
peak (4x oversampled) above TRUE_PEAK_DBTP (-1 dBTP, EBU R128's and the streaming services' ceiling: higher
peaks clip in a lossy encoder), and "loudness outlier", a track outside Tukey's fences (LOUDNESS_FENCE_IQR
interquartile ranges beyond the quartiles) of its run's integrated loudness (transforms/track_health.py).

`Thresholds` holds every flag's threshold; `cattag tag --health-thresholds gap_s=4,true_peak_dbtp=0`
overrides any of them.
"""

from __future__ import annotations

import dataclasses

import numpy as np

CLIP_LEVEL = 0.999
CLIP_RUN = 3
CLIPPED_RUNS = 10
SILENCE_DBFS = -60.0
EDGE_SILENCE_S = 3.0
GAP_S = 2.0
DC_LEVEL = 0.01
DUAL_MONO_DB = 60.0
CUTOFF_DROP_DB = 30.0
CUTOFF_RANGE_DB = 70.0
CUTOFF_SHARE = 0.85
TRUE_PEAK_DBTP = -1.0
LOUDNESS_FENCE_IQR = 1.5
LOUDNESS_MIN_TRACKS = 20  # fewer tracks than this in a run: their quartiles are too loose to call outliers
SEGMENT_S = 0.1
FLAGS = ("silent", "clipping", "head silence", "tail silence", "gap", "dc offset", "dual mono", "spectral cutoff",
         "true peak", "loudness outlier")


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """Every flag's threshold; the defaults are the module's documented constants."""

    clipped_runs: int = CLIPPED_RUNS
    edge_silence_s: float = EDGE_SILENCE_S
    gap_s: float = GAP_S
    dc_offset: float = DC_LEVEL
    cutoff_share: float = CUTOFF_SHARE
    true_peak_dbtp: float = TRUE_PEAK_DBTP
    loudness_fence_iqr: float = LOUDNESS_FENCE_IQR

    @classmethod
    def parse(cls, text: str | None) -> Thresholds:
        """"gap_s=4,true_peak_dbtp=0" -> Thresholds with those two changed; raises ValueError naming the
        thresholds there are for a name it does not know or a value that is not a number."""
        if not text:
            return cls()
        names = {field.name: field.type for field in dataclasses.fields(cls)}
        values = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, _, value = part.partition("=")
            name = name.strip().replace("-", "_")
            if name not in names:
                raise ValueError(f"--health-thresholds: no threshold {name!r}; there are {', '.join(names)}")
            try:
                values[name] = int(value) if names[name] == "int" else float(value)
            except ValueError:
                raise ValueError(f"--health-thresholds {name}={value!r}: expected a number") from None
        return cls(**values)
_SPECTRUM_POINTS = 4096
_SPECTRUM_EVERY_S = 0.5  # one spectrum frame per half second bounds the cost on long files


@dataclasses.dataclass(frozen=True)
class Health:
    clipped_runs: int
    head_silence_s: float
    tail_silence_s: float
    longest_gap_s: float
    dc_offset: float  # the largest |mean| of a channel, in full-scale units
    dual_mono: bool | None  # None: not a two-channel file
    spectral_cutoff_hz: float | None  # None: no cliff found (the spectrum reaches Nyquist)
    nyquist_hz: float
    silent: bool = False  # below SILENCE_DBFS throughout: one flag, "silent", says it all


class HealthMeter:
    """Streaming fault measures: `add()` blocks of frames x channels in order, then `result()`."""

    def __init__(self, rate_hz: int, channels: int):
        self.rate_hz, self.channels = rate_hz, channels
        self._sum = np.zeros(channels)
        self._frames = 0
        self._run = np.zeros(channels, dtype=np.int64)  # the clipped run each channel is in
        self._runs = 0
        self._difference, self._energy = 0.0, 0.0
        self._segment = max(1, round(SEGMENT_S * rate_hz))
        self._pending = np.zeros((0, channels))
        self._levels: list[np.ndarray] = []  # loudest channel's mean square per 100 ms
        self._window = np.hanning(_SPECTRUM_POINTS)
        self._spectrum = np.zeros(_SPECTRUM_POINTS // 2 + 1)
        self._spectra = 0
        self._next_spectrum = 0
        self._every = max(_SPECTRUM_POINTS, round(_SPECTRUM_EVERY_S * rate_hz))

    def add(self, block: np.ndarray) -> None:
        block = np.asarray(block, dtype=np.float64)
        if block.ndim == 1:
            block = block[:, None]
        if not len(block):
            return
        self._sum += block.sum(axis=0)
        self._count_clipped_runs(np.abs(block) >= CLIP_LEVEL)
        if self.channels == 2:
            self._difference += float(np.square(block[:, 0] - block[:, 1]).sum())
            self._energy += float(np.square(block).sum())
        squares = np.concatenate([self._pending, np.square(block)]) if len(self._pending) else np.square(block)
        whole = len(squares) // self._segment * self._segment
        if whole:
            self._levels.append(squares[:whole].reshape(-1, self._segment, self.channels).mean(axis=1).max(axis=1))
        self._pending = squares[whole:]
        mono = block.mean(axis=1)
        while self._next_spectrum + _SPECTRUM_POINTS <= self._frames + len(block):
            start = self._next_spectrum - self._frames
            if start < 0:  # the frame began in an earlier block: skip it, the next one starts here
                self._next_spectrum = self._frames
                continue
            frame = mono[start:start + _SPECTRUM_POINTS]
            self._spectrum += np.square(np.abs(np.fft.rfft(frame * self._window)))
            self._spectra += 1
            self._next_spectrum += self._every
        self._frames += len(block)

    def _count_clipped_runs(self, clipped: np.ndarray) -> None:
        for channel in range(self.channels):
            column = clipped[:, channel]
            if not column.any():
                self._end_run(channel)
                continue
            # Runs of True: their starts and ends, the first continuing the previous block's run.
            edges = np.diff(np.concatenate([[0], column.astype(np.int8), [0]]))
            starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
            for index, (start, end) in enumerate(zip(starts, ends, strict=True)):
                length = end - start + (self._run[channel] if index == 0 and start == 0 else 0)
                if end == len(column):  # runs on into the next block
                    self._run[channel] = length
                else:
                    self._runs += int(length >= CLIP_RUN)
                    self._run[channel] = 0
            if not column[-1]:
                self._run[channel] = 0

    def _end_run(self, channel: int) -> None:
        self._runs += int(self._run[channel] >= CLIP_RUN)
        self._run[channel] = 0

    def result(self) -> Health:
        for channel in range(self.channels):
            self._end_run(channel)
        levels = np.concatenate(self._levels) if self._levels else np.zeros(0)
        with np.errstate(divide="ignore"):
            silent = 10.0 * np.log10(np.maximum(levels, 1e-20)) < SILENCE_DBFS
        head = _leading(silent)
        tail = _leading(silent[::-1]) if head < len(silent) else 0
        inner = silent[head:len(silent) - tail]
        dual = None
        if self.channels == 2:
            dual = bool(self._energy > 0 and self._difference <= self._energy * 10 ** (-DUAL_MONO_DB / 10))
        return Health(
            clipped_runs=self._runs, head_silence_s=head * SEGMENT_S, tail_silence_s=tail * SEGMENT_S,
            longest_gap_s=_longest_run(inner) * SEGMENT_S,
            dc_offset=float(np.max(np.abs(self._sum / max(self._frames, 1)))),
            dual_mono=dual, spectral_cutoff_hz=self._cutoff(), nyquist_hz=self.rate_hz / 2,
            silent=bool(len(silent) and silent.all()))

    def _cutoff(self) -> float | None:
        """The top of the audible spectrum when a cliff ends it: the highest frequency within
        CUTOFF_RANGE_DB of the spectrum's peak, where the level falls at least CUTOFF_DROP_DB from
        1 kHz below it to anything from 1 kHz above it (a resampler's or encoder's low-pass; a natural
        roll-off is far gentler). None: no cliff."""
        if not self._spectra:
            return None
        hz = np.fft.rfftfreq(_SPECTRUM_POINTS, 1.0 / self.rate_hz)
        with np.errstate(divide="ignore"):
            level = 10.0 * np.log10(np.maximum(self._spectrum / self._spectra, 1e-30))
        smooth = max(1, int(round(100.0 / hz[1])))
        padded = np.pad(level, (smooth // 2, smooth - 1 - smooth // 2), mode="edge")  # no zeros pulled in at the ends
        level = np.convolve(padded, np.ones(smooth) / smooth, mode="valid")
        audible = np.flatnonzero(level > level.max() - CUTOFF_RANGE_DB)
        if not len(audible):
            return None
        top = int(audible[-1])
        step = max(1, int(round(1000.0 / hz[1])))
        if top + step >= len(hz) - smooth:  # audible up to (nearly) Nyquist
            return None
        drop = level[max(0, top - step)] - level[top + step:].max()
        return float(hz[top]) if drop >= CUTOFF_DROP_DB else None


def flags(health: Health, thresholds: Thresholds = Thresholds()) -> list[str]:
    """The faults of one track, by the thresholds (the documented defaults unless given)."""
    if health.silent:
        return ["silent"]
    found = []
    if health.clipped_runs >= thresholds.clipped_runs:
        found.append("clipping")
    if health.head_silence_s > thresholds.edge_silence_s:
        found.append("head silence")
    if health.tail_silence_s > thresholds.edge_silence_s:
        found.append("tail silence")
    if health.longest_gap_s >= thresholds.gap_s:
        found.append("gap")
    if health.dc_offset > thresholds.dc_offset:
        found.append("dc offset")
    if health.dual_mono:
        found.append("dual mono")
    if health.spectral_cutoff_hz and health.spectral_cutoff_hz < thresholds.cutoff_share * health.nyquist_hz:
        found.append("spectral cutoff")
    return found


def true_peak_over(true_peak_dbtp: float | None, thresholds: Thresholds = Thresholds()) -> bool:
    return true_peak_dbtp is not None and true_peak_dbtp > thresholds.true_peak_dbtp


def loudness_fences(loudness_lufs: list[float], thresholds: Thresholds = Thresholds()) -> tuple[float, float] | None:
    """(low, high) integrated loudness outside which a track of this run is an outlier (Tukey's fences), or
    None with fewer than LOUDNESS_MIN_TRACKS measured tracks."""
    if len(loudness_lufs) < LOUDNESS_MIN_TRACKS:
        return None
    q1, q3 = np.percentile(np.asarray(loudness_lufs, np.float64), [25, 75])
    spread = thresholds.loudness_fence_iqr * (q3 - q1)
    return float(q1 - spread), float(q3 + spread)


def _leading(values: np.ndarray) -> int:
    false = np.flatnonzero(~values)
    return int(false[0]) if len(false) else len(values)


def _longest_run(values: np.ndarray) -> int:
    if not values.any():
        return 0
    edges = np.diff(np.concatenate([[0], values.astype(np.int8), [0]]))
    return int((np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)).max())
