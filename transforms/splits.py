"""Deterministic, leak-free train/validation/test assignment."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from schemas.examples import SPLITS

DEFAULT_PROPORTIONS = (0.8, 0.1, 0.1)


def parse_proportions(text: str) -> tuple[float, float, float]:
    """'80,10,10' or '0.8,0.1,0.1' -> (0.8, 0.1, 0.1)."""
    try:
        parts = [float(p) for p in text.replace("/", ",").split(",")]
    except ValueError:
        raise ValueError(f"--splits {text!r}: expected three numbers such as 80,10,10") from None
    if len(parts) != 3 or any(p < 0 for p in parts) or sum(parts) <= 0:
        raise ValueError(f"--splits {text!r}: expected three non-negative numbers such as 80,10,10")
    total = sum(parts)
    return (parts[0] / total, parts[1] / total, parts[2] / total)


def split_key(*, track_id: str, artist: str | None, copies: str | None = None) -> str:
    """What a split is a function of: the key of the track's copies when it has any (every copy of one
    recording in one split), else its artist when known (no artist straddles splits), else the track."""
    if copies:
        return copies
    return f"artist:{artist}" if artist else f"track:{track_id}"


def copies_key(recording_id: str, artists: Iterable[str | None]) -> str:
    """The split key shared by the copies of one recording: the first of its members' artists, so that the
    copies stay with that artist's other tracks, else the recording itself. Copies credited to different
    artists (a compilation's "Various Artists") keep the first artist's split; the others' tracks may sit
    elsewhere, which leaks less than a recording in two splits."""
    named = sorted(artist for artist in artists if artist)
    return f"artist:{named[0]}" if named else f"recording:{recording_id}"


def split_of(key: str, *, proportions: tuple[float, float, float] = DEFAULT_PROPORTIONS) -> str:
    """Maps a stable key to a split with a SHA-256 hash: the same on every run, process and runner
    (Python's hash() is salted per process, so it must never be used here)."""
    unit = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") / 2**64
    train, validation, _ = proportions
    if unit < train:
        return SPLITS[0]
    if unit < train + validation:
        return SPLITS[1]
    return SPLITS[2]
