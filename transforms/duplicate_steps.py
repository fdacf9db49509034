"""Copies of one recording found by their fingerprints without comparing all pairs, in Beam
(transforms/duplicates.py has the functions). ClusterCopies finds them; FindCopies annotates tag rows with
`recording_id` and `duplicate_of`; SplitKeysOfCopies gives featurize the split key each copy shares:

    fingerprints --sampled keys, arrays per bundle--> GroupByKey(key shard) --pairs sharing a key-->
        GroupByKey(pair shard) --shared enough--> join a's fingerprint, then b's --align--> confirmed copies
        --CombineGlobally(union-find)--> clusters
    FindCopies: clusters --join each member's preference--> preferred copy per cluster --join the rows--> rows

The index travels as numpy blocks (a bundle's keys of one shard in one element): Beam's per-element cost
would otherwise dominate, as a million tracks hold tens of millions of keys (bench/cluster_scale.py).

Only the tracks with a copy travel past the alignment; a track without one gets its own id
(duplicates.own_recording_id), so the same catalogue gives the same ids on every runner.
"""

from __future__ import annotations

from collections.abc import Iterator

import apache_beam as beam
import numpy as np
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

from transforms import duplicates, splits
from transforms.chromaprint import ITEM_S


KEY_SHARDS = 64  # the index's groups: each holds about 1/64 of every key entry, a few MB at a million tracks
PAIR_SHARDS = 64
_FLUSH_ENTRIES = 1 << 20  # key entries a worker buffers before it sends them on


class _IndexBlocks(beam.DoFn):
    """(track id, words) -> (key shard, (keys, track hashes)): a bundle's index entries as arrays, one block
    per shard, so that a million tracks make thousands of elements, not hundreds of millions."""

    def start_bundle(self) -> None:
        self._keys: list[np.ndarray] = []
        self._tracks: list[np.ndarray] = []
        self._entries = 0

    def process(self, element) -> Iterator[tuple[int, tuple[np.ndarray, np.ndarray]]]:
        track_id, words = element
        keys = duplicates.index_keys(np.asarray(words, np.uint32))
        self._keys.append(keys)
        self._tracks.append(np.full(len(keys), duplicates.track_hash(track_id), np.uint64))
        self._entries += len(keys)
        if self._entries >= _FLUSH_ENTRIES:
            yield from self._blocks()

    def finish_bundle(self) -> Iterator[WindowedValue]:
        for block in self._blocks():
            yield WindowedValue(block, GlobalWindow().max_timestamp(), (GlobalWindow(),))

    def _blocks(self) -> Iterator[tuple[int, tuple[np.ndarray, np.ndarray]]]:
        if not self._entries:
            return
        keys, tracks = np.concatenate(self._keys), np.concatenate(self._tracks)
        self.start_bundle()
        yield from _by_shard(keys % KEY_SHARDS, keys, tracks)


def _by_shard(shards: np.ndarray, first: np.ndarray, second: np.ndarray) -> Iterator[tuple[int, tuple]]:
    order = np.argsort(shards, kind="stable")
    shards, first, second = shards[order], first[order], second[order]
    bounds = np.flatnonzero(np.diff(shards)) + 1
    for part in np.split(np.arange(len(shards)), bounds):
        if len(part):
            yield int(shards[part[0]]), (first[part], second[part])


def _pairs_of_shard(element) -> Iterator[tuple[int, tuple[np.ndarray, np.ndarray]]]:
    """(key shard, blocks) -> (pair shard, (a hashes, b hashes)): every pair of tracks sharing a key, once
    per key, sent to the shard of the pair so that one shard counts all of a pair's keys."""
    _, blocks = element
    blocks = list(blocks)
    a, b = duplicates.pairs_in_block(np.concatenate([keys for keys, _ in blocks]),
                                     np.concatenate([tracks for _, tracks in blocks]))
    yield from _by_shard((a ^ b) % np.uint64(PAIR_SHARDS), a, b)


def _candidates_of_shard(element) -> Iterator[tuple[int, int]]:
    """(pair shard, blocks of pairs) -> (a hash, b hash) of each pair sharing enough keys."""
    _, blocks = element
    blocks = list(blocks)
    yield from duplicates.count_pairs(np.concatenate([a for a, _ in blocks]), np.concatenate([b for _, b in blocks]))


def _with_first(element) -> Iterator[tuple[int, tuple[str, np.ndarray]]]:
    _, grouped = element
    for first in grouped["words"]:
        for b in grouped["pairs"]:
            yield b, first


def _confirmed(element, only_pairs_with: str | None) -> Iterator[tuple[str, str]]:
    _, grouped = element
    for b, words_b in grouped["words"]:
        for a, words_a in grouped["firsts"]:
            if a == b or (only_pairs_with and not (a.startswith(only_pairs_with) or b.startswith(only_pairs_with))):
                continue
            shorter = min(len(words_a), len(words_b)) * ITEM_S
            if duplicates.align(words_a, words_b).is_copy(shorter):
                yield min(a, b), max(a, b)


class _SetOf(beam.CombineFn):
    def create_accumulator(self) -> set:
        return set()

    def add_input(self, accumulator: set, value) -> set:
        accumulator.add(value)
        return accumulator

    def merge_accumulators(self, accumulators) -> set:
        return set().union(*accumulators)

    def extract_output(self, accumulator: set) -> frozenset:
        return frozenset(accumulator)


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

    `only_pairs_with`: align only the pairs where a track id starts with it (the new tracks of a run
    against the ones an output holds, whose pairs among themselves were settled when they were tagged)."""

    def __init__(self, only_pairs_with: str | None = None):
        super().__init__()
        self._only_pairs_with = only_pairs_with

    def expand(self, words):
        words = words | "AsArrays" >> beam.Map(lambda kv: (kv[0], np.asarray(kv[1], np.uint32)))
        candidates = (words
                      | "IndexKeys" >> beam.ParDo(_IndexBlocks())
                      | "ByKeyShard" >> beam.GroupByKey()
                      | "PairsSharingKeys" >> beam.FlatMap(_pairs_of_shard)
                      | "ByPairShard" >> beam.GroupByKey()
                      | "EnoughShared" >> beam.FlatMap(_candidates_of_shard))
        # Only the fingerprints of candidate tracks go through the joins: at a million tracks the joins of
        # all of them held most of the job's memory (bench/cluster_scale.py).
        in_pairs = beam.pvalue.AsSingleton(
            candidates | "CandidateTracks" >> beam.FlatMap(lambda pair: pair)
            | "AsSet" >> beam.CombineGlobally(_SetOf()))
        by_hash = (words
                   | "ByTrackHash" >> beam.Map(lambda kv: (duplicates.track_hash(kv[0]), kv))
                   | "OfCandidates" >> beam.Filter(lambda kv, tracks: kv[0] in tracks, in_pairs))
        firsts = ({"pairs": candidates, "words": by_hash} | "JoinFirst" >> beam.CoGroupByKey()
                  | "WithFirst" >> beam.FlatMap(_with_first))
        copies = ({"firsts": firsts, "words": by_hash} | "JoinSecond" >> beam.CoGroupByKey()
                  | "Align" >> beam.FlatMap(_confirmed, self._only_pairs_with))
        return copies | "Clusters" >> beam.CombineGlobally(_Clusters())


class FindCopies(beam.PTransform):
    """Tag rows (with `fingerprint`) -> the rows with `recording_id` and `duplicate_of` set."""

    def expand(self, rows):
        keyed = rows | "RowByTrack" >> beam.Map(lambda row: (row["track_id"], row))
        words = rows | "Fingerprints" >> beam.FlatMap(
            lambda row: [(row["track_id"], list(row["fingerprint"]))] if row.get("fingerprint") else [])
        clusters = words | "ClusterCopies" >> ClusterCopies()
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
    {track id: split key} of every track that has a copy (transforms.splits.copies_key), for featurize."""

    def expand(self, inputs):
        members = (inputs["words"] | "ClusterCopies" >> ClusterCopies()
                   | "Members" >> beam.FlatMap(_members))
        return ({"recording": members, "artist": inputs["artists"]} | "JoinArtists" >> beam.CoGroupByKey()
                | "ByRecording" >> beam.FlatMap(
                    lambda kv: [(recording, (kv[0], artist)) for recording in kv[1]["recording"]
                                for artist in kv[1]["artist"]])
                | "Recordings" >> beam.GroupByKey()
                | "SplitKeys" >> beam.FlatMap(lambda kv: _copies_keys((kv[0], list(kv[1]))))
                | "AsDict" >> beam.combiners.ToDict())
