"""Copies of one recording found by their fingerprints without comparing all pairs, in Beam
(transforms/duplicates.py has the functions). ClusterCopies finds them; FindCopies annotates tag rows with
`recording_id` and `duplicate_of`; SplitKeysOfCopies gives featurize the split key each copy shares:

    fingerprints --spilled: sampled keys by key shard, fingerprints by track shard-->
        GroupByKey(key shard) --pairs sharing a key--> GroupByKey(pair shard) --shared enough--> candidates
        --join the shard of a's fingerprint--> a's words sent to b's shard --join b's--> align --> copies
        --CombineGlobally(union-find)--> clusters
    FindCopies: clusters --join each member's preference--> preferred copy per cluster --join the rows--> rows

The index and the fingerprints are written to temporary files a bundle at a time (transforms/spill.py),
and the shuffles carry only the files' sections: a million tracks hold tens of millions of keys, which
per element would drown in Beam's per-element cost, and as arrays in the shuffles kept 5.9 GB in the
DirectRunner's memory (bench/cluster_scale.py). Each later step reads back its own shard only.

Only the tracks with a copy travel past the alignment; a track without one gets its own id
(duplicates.own_recording_id), so the same catalogue gives the same ids on every runner.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator

import apache_beam as beam
import numpy as np
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

from transforms import duplicates, spill, splits


# Shards of the index, of the fingerprints and of the pairs: at a million tracks one index or fingerprint
# shard holds about 16 MB. The pairs' step writes KEY_SHARDS x PAIR_SHARDS sections at most, which a small
# catalogue pays for in file reads (256 x 256 made featurize of 600 tracks 80% slower, 64 x 32: bench/RESULTS.md).
KEY_SHARDS = 64
TRACK_SHARDS = 64
PAIR_SHARDS = 32
_FLUSH_BYTES = 16 << 20  # what a worker buffers before it writes a file (its memory: a few times this)


def _groups(shards: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """Shard numbers -> (shard, the positions holding it) for each shard present, in shard order."""
    order = np.argsort(shards, kind="stable")
    bounds = np.flatnonzero(np.diff(shards[order])) + 1
    for part in np.split(order, bounds):
        if len(part):
            yield int(shards[part[0]]), part


def _shard_of(hashes: np.ndarray, shards: int = TRACK_SHARDS) -> np.ndarray:
    return (np.asarray(hashes, np.uint64) % np.uint64(shards)).astype(np.int64)


def _fingerprints(ids: list[str], hashes: np.ndarray, words: list[np.ndarray], **more: np.ndarray) -> dict:
    """Fingerprints as arrays, for a spilled section."""
    return {"ids": np.array(ids, dtype=str), "hashes": np.asarray(hashes, np.uint64),
            "lengths": np.array([len(w) for w in words], np.int64),
            "words": np.concatenate(words) if words else np.zeros(0, np.uint32), **more}


def _unpacked(arrays: dict) -> Iterator[tuple[int, str, np.ndarray, int]]:
    """A section written by _fingerprints -> (track hash, track id, words, position) per fingerprint."""
    ends = np.cumsum(arrays["lengths"])
    for i, (track_hash, track_id) in enumerate(zip(arrays["hashes"].tolist(), arrays["ids"].tolist())):
        yield track_hash, track_id, arrays["words"][ends[i] - arrays["lengths"][i]:ends[i]], i


def _read_fingerprints(sections, wanted: set[int]) -> dict[int, list[tuple[str, np.ndarray]]]:
    """The spilled fingerprints of the tracks in `wanted` (by track hash) -> {hash: [(track id, words)]}:
    a list, as two ids may share a hash (the alignment then tells them apart)."""
    found: dict[int, list[tuple[str, np.ndarray]]] = {}
    for arrays in spill.read_sections(sections):
        for track_hash, track_id, words, _ in _unpacked(arrays):
            if track_hash in wanted:
                found.setdefault(track_hash, []).append((track_id, words))
    return found


class _SpillFingerprints(beam.DoFn):
    """(track id, words) -> {"keys": [(key shard, section)], "words": [(track shard, section)]}: a bundle's
    index entries (each track's sampled words) and fingerprints, written to one file per bundle (or per
    _FLUSH_BYTES), so that a million tracks make a few hundred small elements to shuffle, not gigabytes."""

    def __init__(self, folder: str):
        self._folder = folder

    def start_bundle(self) -> None:
        self._ids: list[str] = []
        self._words: list[np.ndarray] = []
        self._keys: list[np.ndarray] = []
        self._bytes = 0

    def process(self, element) -> Iterator[dict]:
        track_id, words = element
        words = np.asarray(words, np.uint32)
        self._ids.append(track_id)
        self._words.append(words)
        self._keys.append(duplicates.index_keys(words))
        self._bytes += 4 * len(words) + 12 * len(self._keys[-1]) + len(track_id)
        if self._bytes >= _FLUSH_BYTES:
            yield self._written()

    def finish_bundle(self) -> Iterator[WindowedValue]:
        if self._ids:
            yield WindowedValue(self._written(), GlobalWindow().max_timestamp(), (GlobalWindow(),))

    def _written(self) -> dict:
        ids, words, keys = self._ids, self._words, self._keys
        self.start_bundle()
        hashes = np.array([duplicates.track_hash(track) for track in ids], np.uint64)
        entry_keys = np.concatenate(keys)
        entry_tracks = np.repeat(hashes, [len(k) for k in keys])
        parts = [(("keys", shard), {"keys": entry_keys[at], "tracks": entry_tracks[at]})
                 for shard, at in _groups(_shard_of(entry_keys, KEY_SHARDS))]
        parts += [(("words", shard), _fingerprints([ids[i] for i in at], hashes[at], [words[i] for i in at]))
                  for shard, at in _groups(_shard_of(hashes))]
        sections = spill.write_sections(self._folder, parts)
        return {kind: [(shard, section) for (of, shard), section in sections if of == kind] for kind in ("keys", "words")}


def _pairs_of_key_shard(element, folder: str) -> Iterator[tuple[int, spill.Section]]:
    """(key shard, sections of index entries) -> (pair shard, section of pairs): every pair of tracks sharing
    a key, once per key, sent to the shard of the pair so that one shard counts all of a pair's keys."""
    _, sections = element
    blocks = spill.read_sections(sections)
    a, b = duplicates.pairs_in_block(np.concatenate([block["keys"] for block in blocks]),
                                     np.concatenate([block["tracks"] for block in blocks]))
    yield from spill.write_sections(folder, [(shard, {"a": a[at], "b": b[at]})
                                             for shard, at in _groups(_shard_of(a ^ b, PAIR_SHARDS))])


def _candidates_of_pair_shard(element) -> Iterator[tuple[int, tuple[np.ndarray, np.ndarray]]]:
    """(pair shard, sections of pairs) -> (track shard of a, (a hashes, b hashes)) of the pairs sharing enough
    keys: few (copies, and the rare chance pair), so they travel as arrays, not spilled."""
    _, sections = element
    blocks = spill.read_sections(sections)
    pairs = duplicates.count_pairs(np.concatenate([block["a"] for block in blocks]),
                                   np.concatenate([block["b"] for block in blocks]))
    if pairs:
        a, b = np.array(pairs, np.uint64).T
        for shard, at in _groups(_shard_of(a)):
            yield shard, (a[at], b[at])


def _firsts_of_shard(element, folder: str) -> Iterator[tuple[int, spill.Section]]:
    """(track shard, {"pairs": candidate pairs whose a is in it, "words": its fingerprints' sections}) ->
    (track shard of b, section of (b hash, a's id, a's words)): a's fingerprint sent to where b's is."""
    _, grouped = element
    pairs = list(grouped["pairs"])
    if not pairs:
        return
    a = np.concatenate([first for first, _ in pairs])
    b = np.concatenate([second for _, second in pairs])
    fingerprints = _read_fingerprints(grouped["words"], set(a.tolist()))
    partners, ids, words = [], [], []
    for first, second in zip(a.tolist(), b.tolist()):
        for track_id, track_words in fingerprints.get(first, ()):
            partners.append(second)
            ids.append(track_id)
            words.append(track_words)
    partners = np.array(partners, np.uint64)
    yield from spill.write_sections(folder, [
        (shard, _fingerprints([ids[i] for i in at], partners[at], [words[i] for i in at]))
        for shard, at in _groups(_shard_of(partners))])


def _confirmed_of_shard(element, only_pairs_with: str | None) -> Iterator[tuple[str, str]]:
    """(track shard, {"firsts": sections from _firsts_of_shard, "words": its fingerprints' sections}) ->
    (a id, b id), smaller first, of each candidate pair the alignment confirms as copies."""
    _, grouped = element
    firsts = spill.read_sections(grouped["firsts"])
    if not firsts:
        return
    seconds = _read_fingerprints(grouped["words"], {int(h) for block in firsts for h in block["hashes"]})
    for block in firsts:
        for partner, a, words_a, _ in _unpacked(block):
            for b, words_b in seconds.get(partner, ()):
                if a == b or (only_pairs_with and not (a.startswith(only_pairs_with) or b.startswith(only_pairs_with))):
                    continue
                if duplicates.is_copy(words_a, words_b):
                    yield min(a, b), max(a, b)


class _Clusters(beam.CombineFn):
    """Confirmed copy pairs -> {track id: recording id} for every track that has a copy."""

    def create_accumulator(self):
        return []

    def add_input(self, pairs, pair):
        pairs.append(pair)
        return pairs

    def merge_accumulators(self, accumulators):
        return [pair for pairs in accumulators for pair in pairs]

    def extract_output(self, pairs):
        tracks = {track for pair in pairs for track in pair}
        return duplicates.recording_ids(sorted(tracks), sorted(pairs))


def _members(clusters: dict) -> Iterator[tuple[str, str]]:
    yield from sorted(clusters.items())


def _preferred(element) -> Iterator[tuple[str, tuple[str, str]]]:
    """(recording id, [(track, preference)]) -> (track, (recording id, preferred copy)) per member."""
    recording, members = element
    best = min(members, key=lambda member: member[1])[0]
    for track, _ in members:
        yield track, (recording, best)


def _annotated(element) -> Iterator[dict]:
    track_id, grouped = element
    copies = list(grouped["copy"])
    for row in grouped["row"]:
        if copies:
            recording, best = copies[0]
            yield {**row, "recording_id": recording, "duplicate_of": None if best == track_id else best}
        else:
            yield {**row, "recording_id": duplicates.own_recording_id(track_id), "duplicate_of": None}


class ClusterCopies(beam.PTransform):
    """(track id, fingerprint words) -> one dict {track id: recording id} of every track that has a copy
    (a track missing from it has none: duplicates.own_recording_id is its recording). For a side input.

    `temp_dir`: where the index and the fingerprints are spilled (transforms/spill.py), a folder every
    worker reaches (the pipelines give their output folder); by default a new local temporary folder, which
    serves the runners of one machine. The spilled files are removed once the clusters are known.
    `only_pairs_with`: align only the pairs where a track id starts with it (the new tracks of a run
    against the ones an output holds, whose pairs among themselves were settled when they were tagged)."""

    def __init__(self, temp_dir: str | None = None, only_pairs_with: str | None = None):
        super().__init__()
        self._folder = spill.new_folder(temp_dir or tempfile.mkdtemp(prefix="cattag-copies-"))
        self._only_pairs_with = only_pairs_with

    def expand(self, words):
        folder = self._folder
        spilled = words | "SpillFingerprints" >> beam.ParDo(_SpillFingerprints(folder))
        fingerprints = spilled | "FingerprintSections" >> beam.FlatMap(lambda written: written["words"])
        candidates = (spilled
                      | "KeySections" >> beam.FlatMap(lambda written: written["keys"])
                      | "ByKeyShard" >> beam.GroupByKey()
                      | "PairsSharingKeys" >> beam.FlatMap(_pairs_of_key_shard, folder)
                      | "ByPairShard" >> beam.GroupByKey()
                      | "EnoughShared" >> beam.FlatMap(_candidates_of_pair_shard))
        firsts = ({"pairs": candidates, "words": fingerprints} | "JoinFirst" >> beam.CoGroupByKey()
                  | "FirstsToSeconds" >> beam.FlatMap(_firsts_of_shard, folder))
        copies = ({"firsts": firsts, "words": fingerprints} | "JoinSecond" >> beam.CoGroupByKey()
                  | "Align" >> beam.FlatMap(_confirmed_of_shard, self._only_pairs_with))
        return (copies | "Clusters" >> beam.CombineGlobally(_Clusters())
                | "RemoveSpilled" >> beam.Map(_after_removing, folder))


def _after_removing(clusters: dict, folder: str) -> dict:
    """The clusters, once the spilled files are gone: every step that reads them is done by now."""
    spill.remove_folder(folder)
    return clusters


class FindCopies(beam.PTransform):
    """Tag rows (with `fingerprint`) -> the rows with `recording_id` and `duplicate_of` set. `temp_dir`: as
    ClusterCopies'."""

    def __init__(self, temp_dir: str | None = None):
        super().__init__()
        self._temp_dir = temp_dir

    def expand(self, rows):
        keyed = rows | "RowByTrack" >> beam.Map(lambda row: (row["track_id"], row))
        words = rows | "Fingerprints" >> beam.FlatMap(
            lambda row: [(row["track_id"], list(row["fingerprint"]))] if row.get("fingerprint") else [])
        clusters = words | "ClusterCopies" >> ClusterCopies(self._temp_dir)
        members = clusters | "Members" >> beam.FlatMap(_members)
        preferences = rows | "Preference" >> beam.Map(
            lambda row: (row["track_id"], duplicates.preference(row["uri"], row.get("health_flags"))))
        by_recording = ({"recording": members, "preference": preferences} | "JoinPreference" >> beam.CoGroupByKey()
                        | "ByRecording" >> beam.FlatMap(
                            lambda kv: [(recording, (kv[0], preference)) for recording in kv[1]["recording"]
                                        for preference in kv[1]["preference"]])
                        | "Recordings" >> beam.GroupByKey()
                        | "PreferredCopy" >> beam.FlatMap(lambda kv: _preferred((kv[0], list(kv[1])))))
        return ({"row": keyed, "copy": by_recording} | "JoinRows" >> beam.CoGroupByKey()
                | "Annotate" >> beam.FlatMap(_annotated))


def _copies_keys(element) -> Iterator[tuple[str, str]]:
    """(recording id, [(track, artist)]) -> (track, the split key of the recording's copies) per member."""
    recording, members = element
    key = splits.copies_key(recording, [artist for _, artist in members])
    for track, _ in sorted(members):
        yield track, key


class SplitKeysOfCopies(beam.PTransform):
    """{"words": (track id, fingerprint words), "artists": (track id, artist or None)} -> one dict
    {track id: split key} of every track that has a copy (transforms.splits.copies_key), for featurize.
    `temp_dir`: as ClusterCopies'."""

    def __init__(self, temp_dir: str | None = None):
        super().__init__()
        self._temp_dir = temp_dir

    def expand(self, inputs):
        members = (inputs["words"] | "ClusterCopies" >> ClusterCopies(self._temp_dir)
                   | "Members" >> beam.FlatMap(_members))
        return ({"recording": members, "artist": inputs["artists"]} | "JoinArtists" >> beam.CoGroupByKey()
                | "ByRecording" >> beam.FlatMap(
                    lambda kv: [(recording, (kv[0], artist)) for recording in kv[1]["recording"]
                                for artist in kv[1]["artist"]])
                | "Recordings" >> beam.GroupByKey()
                | "SplitKeys" >> beam.FlatMap(lambda kv: _copies_keys((kv[0], list(kv[1]))))
                | "AsDict" >> beam.combiners.ToDict())
