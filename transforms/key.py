"""estimate_key(samples, rate) -> Key: the tonic and mode that best fit a track's pitch-class profile.

1. Spectrum: about 0.5 s frames (a 8192-point FFT at 16 kHz: 2 Hz bins, enough to tell semitones
   apart from 55 Hz up) every half frame, linear magnitude between 55 Hz and 2 kHz, keeping only
   spectral peaks (bins louder than both neighbours), as an HPCP does: noise and the skirts of
   loud partials then weigh little.
2. Tuning: the magnitude-weighted circular mean of the peaks' distance from equal temperament at
   A = 440 Hz, so a band tuned a quarter-tone off still lands on its notes.
3. Pitch-class profile: each peak adds its magnitude to its nearest pitch class, weighted by
   cos^2 of its distance (in semitones) from that note, summed over the whole track.
4. Key: the highest Pearson correlation with the 24 rotations of Albrecht and Shanahan's (2013)
   major and minor profiles (counted from a corpus of scores; not fitted here).

`key_confidence` is that correlation clipped to [0, 1] (Krumhansl's "key strength"). Keys are
written with sharps (`A# minor`, never `Bb minor`); `camelot` is the DJ wheel's code (`8A` = A minor,
`8B` = C major). On the 51 keyed GTZAN-dev clips this scored a MIREX weighted score of 0.65
(bench/RESULTS.md, tempo and key section, with the other settings compared).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.fft

from transforms.mel import hann_window

PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
# Albrecht, J. and Shanahan, D. (2013), "The use of large corpora to train a new type of key-finding
# algorithm", Music Perception 31(1): relative frequency of each scale degree from the tonic.
MAJOR_PROFILE = np.array([0.238, 0.006, 0.111, 0.006, 0.137, 0.094, 0.016, 0.214, 0.009, 0.080, 0.008, 0.081])
MINOR_PROFILE = np.array([0.220, 0.006, 0.104, 0.123, 0.019, 0.103, 0.012, 0.214, 0.062, 0.022, 0.061, 0.052])
FMIN_HZ, FMAX_HZ = 55.0, 2000.0
FRAME_S = 0.5
MIN_DURATION_S = 2.0


@dataclasses.dataclass(frozen=True)
class Key:
    key: str | None  # "<tonic> major|minor", sharps only
    key_confidence: float | None
    camelot: str | None
    reason: str  # why key is None; "" when set


@dataclasses.dataclass(frozen=True)
class ChromaBasis:
    """What pitch_class_profile needs that depends only on the sample rate: build it once per worker."""

    rate_hz: int
    n_fft: int
    window: np.ndarray
    bins: np.ndarray  # FFT bins between FMIN_HZ and FMAX_HZ
    midi: np.ndarray  # their MIDI pitch at A = 440 Hz (fractional)


def chroma_basis(rate_hz: int) -> ChromaBasis:
    n_fft = 1 << int(np.ceil(np.log2(FRAME_S * rate_hz)))
    hz = np.fft.rfftfreq(n_fft, 1.0 / rate_hz)
    bins = np.flatnonzero((hz >= FMIN_HZ) & (hz <= min(FMAX_HZ, rate_hz / 2)))
    return ChromaBasis(rate_hz, n_fft, hann_window(n_fft).astype(np.float32), bins,
                       69.0 + 12.0 * np.log2(hz[bins] / 440.0))


def pitch_class_profile(samples: np.ndarray, basis: ChromaBasis) -> np.ndarray:
    """[12] summed peak magnitude per pitch class (C first), after tuning; zeros for silence."""
    if len(samples) < basis.n_fft:
        return np.zeros(12)
    frames = np.lib.stride_tricks.sliding_window_view(samples.astype(np.float32, copy=False), basis.n_fft)
    magnitude = np.abs(scipy.fft.rfft(frames[:: basis.n_fft // 2] * basis.window, axis=1))
    lo, hi = basis.bins[0], basis.bins[-1]
    band = magnitude[:, lo - 1: hi + 2]  # one bin either side, to tell peaks at the edges
    centre = band[:, 1:-1]
    peaks = np.where((centre > band[:, :-2]) & (centre >= band[:, 2:]), centre, 0.0).sum(axis=0)
    if not np.any(peaks > 0):
        return np.zeros(12)
    deviation = basis.midi - np.round(basis.midi)
    tuning = float(np.angle(np.sum(peaks * np.exp(2j * np.pi * deviation))) / (2 * np.pi))
    pitch = basis.midi - tuning
    nearest = np.round(pitch)
    weight = peaks * np.cos(np.pi * np.minimum(np.abs(pitch - nearest), 0.5)) ** 2
    return np.bincount((nearest.astype(int) - 60) % 12, weights=weight, minlength=12)


def estimate_key(samples: np.ndarray, basis: ChromaBasis) -> Key:
    if len(samples) / basis.rate_hz < MIN_DURATION_S:
        return Key(None, None, None, f"shorter than {MIN_DURATION_S:.0f} s")
    profile = pitch_class_profile(samples, basis)
    if profile.sum() <= 0 or np.ptp(profile) <= 1e-9 * profile.sum():
        return Key(None, None, None, "no pitched content between 55 Hz and 2 kHz")
    best, best_r = None, -2.0
    for mode, template in (("major", MAJOR_PROFILE), ("minor", MINOR_PROFILE)):
        for tonic in range(12):
            r = float(np.corrcoef(profile, np.roll(template, tonic))[0, 1])
            if r > best_r:
                best, best_r = (tonic, mode), r
    tonic, mode = best
    return Key(f"{PITCH_CLASSES[tonic]} {mode}", round(max(0.0, best_r), 4), camelot(tonic, mode), "")


def camelot(tonic: int, mode: str) -> str:
    """Camelot wheel code: the number steps a fifth per hour (C major = 8B), minor keys share their
    relative major's number with letter A (A minor = 8A)."""
    major_tonic = tonic if mode == "major" else (tonic + 3) % 12
    number = (7 * major_tonic + 8) % 12 or 12
    return f"{number}{'B' if mode == 'major' else 'A'}"


def parse_key(text: str) -> tuple[int, str]:
    """'A minor' / 'Bb major' / 'f# min' -> (pitch class, mode); ValueError with the accepted forms."""
    parts = text.strip().split()
    flats = {"Db": "C#", "Eb": "D#", "Gb": "F#", "Ab": "G#", "Bb": "A#"}
    if len(parts) == 2:
        tonic = parts[0][:1].upper() + parts[0][1:].lower().replace("♯", "#").replace("♭", "b")
        tonic = flats.get(tonic, tonic)
        mode = {"maj": "major", "major": "major", "min": "minor", "minor": "minor"}.get(parts[1].lower())
        if tonic in PITCH_CLASSES and mode:
            return PITCH_CLASSES.index(tonic), mode
    raise ValueError(f"not a key: {text!r} (write it as '<tonic> major|minor', e.g. 'A minor' or 'F# major')")


def compatible_keys(tonic: int, mode: str) -> list[str]:
    """The key and its Camelot neighbours: one step either way on the wheel, and the relative key."""
    code = camelot(tonic, mode)
    keys = [f"{PITCH_CLASSES[t]} {m}" for m in ("major", "minor") for t in range(12)]
    number, letter = int(code[:-1]), code[-1]
    wanted = {code, f"{number % 12 + 1}{letter}", f"{(number - 2) % 12 + 1}{letter}",
              f"{number}{'A' if letter == 'B' else 'B'}"}
    return [k for k in keys if camelot(PITCH_CLASSES.index(k.split()[0]), k.split()[1]) in wanted]
