"""Copies of one recording from their Chromaprint fingerprints: candidate keys, alignment, clusters.

Scalable in three steps, none comparing all pairs:
1. `candidate_keys`: each track's distinct fingerprint words with their low bits dropped; a Beam step
   groups tracks by key, and two tracks sharing at least MIN_SHARED_KEYS keys become a candidate pair
   (keys held by more than MAX_TRACKS_PER_KEY tracks, near-silence and steady tones, are skipped).
2. `align`: a candidate pair is confirmed by the offset most of its equal keys agree on, then the
   share of differing bits over the overlap at that offset: copies (re-encoded, louder, resampled,
   trimmed) differ in about 5 to 15% of bits, different recordings in about half.
3. `recording_ids`: confirmed pairs joined into clusters (union-find); a cluster's id is derived from
   its members' ids, so the same catalogue gives the same ids on every runner.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Sequence

import numpy as np

from transforms.chromaprint import ITEM_S

KEY_SHIFT = 4  # drop the 4 lowest bits of a word for the key: they flip first under re-encoding
MIN_SHARED_KEYS = 3
MAX_TRACKS_PER_KEY = 200
MAX_BIT_ERROR = 0.25  # different recordings sit near 0.5
MIN_OVERLAP_S = 8.0  # and at least half the shorter track (a trim of a few seconds still matches)
MIN_OVERLAP_SHARE = 0.5


@dataclasses.dataclass(frozen=True)
class Alignment:
    offset_words: int  # b's word i lines up with a's word i + offset
    overlap_s: float
    bit_error: float  # share of differing bits over the overlap (1.0: no overlap)

    def is_copy(self, shorter_s: float) -> bool:
        return (self.bit_error <= MAX_BIT_ERROR and self.overlap_s >= MIN_OVERLAP_S
                and self.overlap_s >= MIN_OVERLAP_SHARE * shorter_s)


def candidate_keys(words: np.ndarray) -> np.ndarray:
    """The distinct keys of one fingerprint (uint32, sorted)."""
    return np.unique(np.asarray(words, np.uint32) >> KEY_SHIFT)


def align(a: np.ndarray, b: np.ndarray) -> Alignment:
    """The best alignment of two fingerprints: the offset most of their equal keys vote for."""
    a, b = np.asarray(a, np.uint32), np.asarray(b, np.uint32)
    if not len(a) or not len(b):
        return Alignment(0, 0.0, 1.0)
    keys_a, keys_b = a >> KEY_SHIFT, b >> KEY_SHIFT
    order = np.argsort(keys_b, kind="stable")
    sorted_b = keys_b[order]
    left = np.searchsorted(sorted_b, keys_a, side="left")
    right = np.searchsorted(sorted_b, keys_a, side="right")
    offsets = [i - order[j] for i in np.flatnonzero(right > left) for j in range(left[i], right[i])]
    if not offsets:
        return Alignment(0, 0.0, 1.0)
    values, counts = np.unique(np.asarray(offsets), return_counts=True)
    offset = int(values[np.argmax(counts)])
    start_b = max(0, -offset)
    start_a = start_b + offset
    length = min(len(a) - start_a, len(b) - start_b)
    if length <= 0:
        return Alignment(offset, 0.0, 1.0)
    differing = np.bitwise_xor(a[start_a:start_a + length], b[start_b:start_b + length])
    bits = np.unpackbits(differing.view(np.uint8)).sum()
    return Alignment(offset, length * ITEM_S, float(bits) / (32.0 * length))


def recording_ids(track_ids: Iterable[str], copies: Iterable[tuple[str, str]]) -> dict[str, str]:
    """track id -> recording id: tracks joined by confirmed copy pairs share one, "rec-" and 16 hex digits
    of the BLAKE2b of the cluster's smallest track id (a track with no copy gets its own)."""
    parent: dict[str, str] = {track: track for track in track_ids}

    def root(track: str) -> str:
        while parent[track] != track:
            parent[track] = parent[parent[track]]
            track = parent[track]
        return track

    for a, b in copies:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)  # the smaller id roots the cluster: order-free
    return {track: own_recording_id(root(track)) for track in parent}


LOSSY_SUFFIXES = frozenset({".mp3", ".ogg", ".opus", ".m4a", ".mp4", ".aac", ".wma", ".webm"})


def preference(uri: str, flags: Sequence[str] | None) -> tuple:
    """How a cluster picks its preferred copy, smallest first: lossless before lossy, fewer faults,
    then the smallest path."""
    suffix = "." + uri.rsplit(".", 1)[-1].lower() if "." in uri.rsplit("/", 1)[-1] else ""
    return (suffix in LOSSY_SUFFIXES, len(flags or ()), uri)


def own_recording_id(track_id: str) -> str:
    """The recording id of a track with no copy (and of a cluster, from its smallest track id)."""
    return "rec-" + hashlib.blake2b(track_id.encode(), digest_size=8).hexdigest()


def pairs_sharing_keys(keyed: Sequence[tuple[int, Sequence[str]]]) -> dict[tuple[str, str], int]:
    """(key, tracks holding it) -> {(track a, track b): keys shared}, a < b; crowded keys skipped.
    What a Beam GroupByKey then a CombinePerKey compute at scale; here for one machine and the tests."""
    shared: dict[tuple[str, str], int] = {}
    for _, tracks in keyed:
        members = sorted(set(tracks))
        if len(members) > MAX_TRACKS_PER_KEY:
            continue
        for i, a in enumerate(members):
            for b in members[i + 1:]:
                shared[(a, b)] = shared.get((a, b), 0) + 1
    return {pair: n for pair, n in shared.items() if n >= MIN_SHARED_KEYS}
