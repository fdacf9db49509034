"""A small labelled catalogue of clearly synthetic music, made from nothing but numpy.

Four styles that differ in the ways genres differ: tempo, metre, rhythm, timbre and harmony.
Used by `cattag demo` so the product can run end to end on a fresh machine with no data.
"""

from __future__ import annotations

import hashlib
import pathlib
from collections.abc import Callable

import numpy as np
import soundfile as sf

SAMPLE_RATE_HZ = 22050
# Formats cycle across tracks so the demo exercises several decoders.
_FORMATS = (("flac", "FLAC", "PCM_16"), ("ogg", "OGG", "VORBIS"), ("wav", "WAV", "PCM_16"), ("mp3", "MP3", "MPEG_LAYER_III"))


def _rng(style: str, index: int) -> np.random.Generator:
    seed = int.from_bytes(hashlib.sha256(f"{style}/{index}".encode()).digest()[:8], "big")
    return np.random.default_rng(seed)


def _tone(freq_hz: float, n: int, *, harmonics: int = 1, decay_s: float | None = None, sr: int) -> np.ndarray:
    t = np.arange(n) / sr
    wave = sum(np.sin(2 * np.pi * freq_hz * h * t) / h for h in range(1, harmonics + 1))
    if decay_s:
        wave = wave * np.exp(-t / decay_s)
    return wave


def _place(out: np.ndarray, sound: np.ndarray, start: int) -> None:
    end = min(len(out), start + len(sound))
    if start < end:
        out[start:end] += sound[: end - start]


def ambient(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Slow detuned pad chords, no percussion."""
    root = rng.uniform(110, 220)
    out = np.zeros(n)
    chord_len = int(sr * rng.uniform(3.0, 5.0))
    for start in range(0, n, chord_len):
        chord = root * np.array([1, 1.25, 1.5, 2.0]) * rng.choice([1, 4 / 3, 3 / 2, 5 / 3])
        length = min(chord_len, n - start)
        envelope = np.sin(np.pi * np.arange(length) / length) ** 2
        for f in chord:
            _place(out, envelope * (_tone(f, length, sr=sr) + _tone(f * 1.003, length, sr=sr)), start)
    return out


def four_on_the_floor(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Kick on every beat at 118-132 bpm, off-beat hi-hats, a pulsing bass."""
    beat = int(sr * 60 / rng.uniform(118, 132))
    t = np.arange(int(0.25 * sr)) / sr
    kick = np.sin(2 * np.pi * (50 + 100 * np.exp(-t * 30)) * t) * np.exp(-t * 12)
    hat = rng.standard_normal(int(0.05 * sr)) * np.exp(-np.arange(int(0.05 * sr)) / (0.01 * sr)) * 0.3
    bass_f = rng.uniform(45, 65)
    out = np.zeros(n)
    for i, start in enumerate(range(0, n, beat)):
        _place(out, kick, start)
        _place(out, np.diff(hat, prepend=0), start + beat // 2)
        _place(out, 0.4 * _tone(bass_f * (1.5 if i % 4 == 3 else 1), beat // 2, harmonics=3, decay_s=0.2, sr=sr), start + beat // 2)
    return out


def waltz_piano(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """3/4 at 80-100 bpm: a low note on the downbeat, plucked chords on beats two and three."""
    beat = int(sr * 60 / rng.uniform(80, 100))
    root = rng.uniform(196, 262)
    scale = root * 2 ** (np.array([0, 2, 4, 5, 7, 9, 11]) / 12)
    out = np.zeros(n)
    degree = 0
    for i, start in enumerate(range(0, n, beat)):
        if i % 3 == 0:  # a new chord on every downbeat
            degree = int(rng.integers(0, 7))
            _place(out, 0.8 * _tone(scale[degree] / 2, int(1.2 * beat), harmonics=6, decay_s=0.6, sr=sr), start)
        else:
            for step in (0, 2, 4):
                _place(out, 0.3 * _tone(scale[(degree + step) % 7], beat, harmonics=5, decay_s=0.25, sr=sr), start)
    return out


def breakbeat(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """160-175 bpm broken drums with a distorted saw bass."""
    step = int(sr * 60 / rng.uniform(160, 175) / 2)
    length = int(0.12 * sr)
    snare = rng.standard_normal(length) * np.exp(-np.arange(length) / (0.04 * sr))
    t = np.arange(length) / sr
    kick = np.sin(2 * np.pi * (45 + 80 * np.exp(-t * 40)) * t) * np.exp(-t * 20)
    pattern = "k.s.ks.sk.kss.s."
    bass_f = rng.uniform(40, 55)
    out = np.zeros(n)
    for i, start in enumerate(range(0, n, step)):
        hit = pattern[i % len(pattern)]
        _place(out, kick if hit == "k" else 0.6 * snare if hit == "s" else np.zeros(1), start)
    saw_t = np.arange(n) / sr
    saw = 2 * ((saw_t * bass_f * (1 + (np.arange(n) // (8 * step)) % 2 * 0.5)) % 1) - 1
    return out + 0.5 * np.tanh(3 * saw) * 0.5


STYLES: dict[str, Callable[[np.random.Generator, int, int], np.ndarray]] = {
    "ambient": ambient,
    "four-on-the-floor": four_on_the_floor,
    "waltz-piano": waltz_piano,
    "breakbeat": breakbeat,
}


def synthesize(style: str, index: int, *, seconds: float, sr: int = SAMPLE_RATE_HZ) -> np.ndarray:
    """One track of `style`, deterministic in (style, index), peak-normalized to a random level."""
    rng = _rng(style, index)
    signal = STYLES[style](rng, int(seconds * sr), sr)
    signal += 0.003 * rng.standard_normal(len(signal))  # a little noise floor, as in recordings
    return (signal / np.max(np.abs(signal)) * rng.uniform(0.3, 0.9)).astype(np.float32)


def write_catalogue(root: str | pathlib.Path, *, tracks_per_style: int, seconds: float) -> list[pathlib.Path]:
    """Writes ROOT/<style>/<style>-NN.<ext>, cycling formats; returns the paths."""
    root = pathlib.Path(root)
    paths = []
    for style in STYLES:
        (root / style).mkdir(parents=True, exist_ok=True)
        for index in range(tracks_per_style):
            ext, fmt, subtype = _FORMATS[index % len(_FORMATS)]
            path = root / style / f"{style}-{index:02d}.{ext}"
            sf.write(path, synthesize(style, index, seconds=seconds), SAMPLE_RATE_HZ, format=fmt, subtype=subtype)
            paths.append(path)
    return paths
