"""Copies of one recording from their Chromaprint fingerprints: candidate keys, alignment, clusters.

Scalable in three steps, none comparing all pairs:
1. `index_keys`: a sample of each track's distinct fingerprint words (the words whose hash falls in the
   lowest 1/KEY_SAMPLING of its range: chosen by content, so a copy samples the same ones wherever its audio starts). A Beam
   step groups them by word in blocks of arrays (`pairs_in_block`), and two tracks sharing at least
   MIN_SHARED_KEYS sampled words become a candidate pair (`count_pairs`; words held by more than
   MAX_TRACKS_PER_KEY tracks, near-silence and steady tones, are skipped). Whole 32-bit words, not words
   with their low bits dropped: copies share as many (their low bits rarely differ where the high ones
   agree: measured on GTZAN-dev re-encodings), and distinct tracks 16 times fewer by chance, which is
   what a million tracks cost.
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

KEY_SHIFT = 4  # the alignment votes on words with their 4 lowest bits dropped: they flip first under re-encoding
KEY_SAMPLING = 4  # index one word in 4: a copy shares dozens of words, and a million tracks make 4x fewer pairs
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


def index_keys(words: np.ndarray) -> np.ndarray:
    """The words of one fingerprint that go into the index (uint32, distinct, sorted): those whose
    multiplicative (Knuth) hash falls in the lowest 1/KEY_SAMPLING of its range."""
    keys = np.unique(np.asarray(words, np.uint32))
    return keys[_sampled(keys)]


def _sampled(words: np.ndarray) -> np.ndarray:
    """Which words the index samples, chosen by content so that a copy samples the same ones."""
    hashed = words.astype(np.uint64) * np.uint64(2654435761) & np.uint64(0xFFFFFFFF)
    # The hash's top bits decide: its low bits are the word's own low bits (an odd multiplier keeps them),
    # which a sample of 1 in 4 would then take from two bits of the word (bench/copies_bench.py: fewer copies found).
    return hashed < np.uint64(2**32 // KEY_SAMPLING)


def batch_index_keys(words: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Many fingerprints, concatenated (`lengths` words each) -> (keys, fingerprint of each key): what
    index_keys gives each one, for a whole batch at once (vectorized), sorted by fingerprint then key."""
    words = np.asarray(words, np.uint32)
    track_of = np.repeat(np.arange(len(lengths)), lengths)
    sampled = _sampled(words)
    words, track_of = words[sampled], track_of[sampled]
    order = np.lexsort((words, track_of))
    words, track_of = words[order], track_of[order]
    distinct = np.ones(len(words), bool)
    distinct[1:] = (words[1:] != words[:-1]) | (track_of[1:] != track_of[:-1])
    return words[distinct], track_of[distinct]


def shared_key_counts(words: np.ndarray, lengths: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    """Many fingerprints, concatenated (`lengths` words each) -> how many of each one's index keys are in
    `sorted_keys` (sorted, distinct)."""
    keys, track_of = batch_index_keys(words, lengths)
    if not len(sorted_keys):
        return np.zeros(len(lengths), np.int64)
    at = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    return np.bincount(track_of[sorted_keys[at] == keys], minlength=len(lengths))


def track_hash(track_id: str) -> int:
    """A track id as 64 bits (BLAKE2b), for the index's arrays: a collision among a million ids has a
    chance of about 3e-8, and would only add a candidate pair that the alignment then checks."""
    return int.from_bytes(hashlib.blake2b(track_id.encode(), digest_size=8).digest(), "little")


def pairs_in_block(keys: np.ndarray, tracks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(key, track hash) entries -> every pair (a < b) of tracks holding one key, once per key it shares;
    keys held by more than MAX_TRACKS_PER_KEY tracks give none. Vectorized: entries sorted by key, then
    for each distance d the entries d apart with the same key."""
    order = np.lexsort((tracks, keys))
    keys, tracks = keys[order], tracks[order]
    if not len(keys):
        return np.zeros(0, np.uint64), np.zeros(0, np.uint64)
    starts = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]]))
    sizes = np.diff(np.concatenate([starts, [len(keys)]]))
    size_of = np.repeat(sizes, sizes)
    keep = (size_of >= 2) & (size_of <= MAX_TRACKS_PER_KEY)
    keys, tracks = keys[keep], tracks[keep]
    firsts, seconds = [np.zeros(0, np.uint64)], [np.zeros(0, np.uint64)]
    for distance in range(1, int(sizes[sizes <= MAX_TRACKS_PER_KEY].max(initial=1))):
        same = np.flatnonzero(keys[distance:] == keys[:-distance])
        firsts.append(tracks[same])
        seconds.append(tracks[same + distance])
    a, b = np.concatenate(firsts), np.concatenate(seconds)
    distinct = a != b  # one track listed twice
    return a[distinct], b[distinct]


def count_pairs(a: np.ndarray, b: np.ndarray) -> list[tuple[int, int]]:
    """Pairs from pairs_in_block (any number of blocks, concatenated) -> those seen at least MIN_SHARED_KEYS
    times (keys shared), sorted."""
    if not len(a):
        return []
    pairs = np.ascontiguousarray(np.stack([a.astype(np.uint64), b.astype(np.uint64)], axis=1))
    unique, counts = np.unique(pairs, axis=0, return_counts=True)
    return [(int(x), int(y)) for x, y in unique[counts >= MIN_SHARED_KEYS]]


def candidate_pairs(fingerprints: dict[str, np.ndarray]) -> list[tuple[str, str]]:
    """track id -> words: the candidate pairs of tracks (by id, a < b), in one block. What ClusterCopies
    computes at scale, in shards; here for one machine and the tests."""
    by_hash = {track_hash(track): track for track in fingerprints}
    keyed = [(index_keys(words), track_hash(track)) for track, words in fingerprints.items()]
    keys = np.concatenate([k for k, _ in keyed] or [np.zeros(0, np.uint32)])
    tracks = np.concatenate([np.full(len(k), h, np.uint64) for k, h in keyed] or [np.zeros(0, np.uint64)])
    return sorted(tuple(sorted((by_hash[a], by_hash[b]))) for a, b in count_pairs(*pairs_in_block(keys, tracks)))


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


def is_copy(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two fingerprints are copies of one recording: their best alignment passes Alignment.is_copy."""
    return align(a, b).is_copy(min(len(a), len(b)) * ITEM_S)


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
