"""Copies of one recording found by their fingerprints without comparing all pairs, in Beam
(transforms/duplicates.py has the functions). ClusterCopies finds them; FindCopies annotates tag rows with
`recording_id` and `duplicate_of`; SplitKeysOfCopies gives featurize the split key each copy shares:

    fingerprints --keys--> GroupByKey(key) --pairs--> CombinePerKey(count) --shared enough-->
        join a's fingerprint, then b's --align--> confirmed copies --CombineGlobally(union-find)-->
        clusters --join each member's preference--> preferred copy per cluster --join the rows--> rows

Only the tracks with a copy travel past the alignment; a track without one gets its own id
(duplicates.own_recording_id), so the same catalogue gives the same ids on every runner.
"""

from __future__ import annotations

from collections.abc import Iterator

import apache_beam as beam

from transforms import duplicates, splits
from transforms.chromaprint import ITEM_S


def _keys(element) -> Iterator[tuple[int, str]]:
    track_id, words = element
    for key in duplicates.candidate_keys(words).tolist():
        yield key, track_id


def _pairs(element) -> Iterator[tuple[tuple[str, str], int]]:
    _, tracks = element
    members = sorted(set(tracks))
    if len(members) > duplicates.MAX_TRACKS_PER_KEY:  # near-silence and steady tones: no evidence
        return
    for i, a in enumerate(members):
        for b in members[i + 1:]:
            yield (a, b), 1


def _with_first(element) -> Iterator[tuple[str, tuple[str, list]]]:
    a, grouped = element
    for words in grouped["words"]:
        for b in grouped["pairs"]:
            yield b, (a, words)


def _confirmed(element) -> Iterator[tuple[str, str]]:
    b, grouped = element
    for words_b in grouped["words"]:
        for a, words_a in grouped["firsts"]:
            shorter = min(len(words_a), len(words_b)) * ITEM_S
            if duplicates.align(words_a, words_b).is_copy(shorter):
                yield a, b


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
        prefix = self._only_pairs_with
        shared = (words
                  | "Keys" >> beam.FlatMap(_keys)
                  | "TracksByKey" >> beam.GroupByKey()
                  | "Pairs" >> beam.FlatMap(_pairs)
                  | "SharedKeys" >> beam.CombinePerKey(sum)
                  | "EnoughShared" >> beam.Filter(
                      lambda kv: kv[1] >= duplicates.MIN_SHARED_KEYS
                      and (prefix is None or kv[0][0].startswith(prefix) or kv[0][1].startswith(prefix)))
                  | "ByFirst" >> beam.Map(lambda kv: kv[0]))
        firsts = ({"pairs": shared, "words": words} | "JoinFirst" >> beam.CoGroupByKey()
                  | "WithFirst" >> beam.FlatMap(_with_first))
        copies = ({"firsts": firsts, "words": words} | "JoinSecond" >> beam.CoGroupByKey()
                  | "Align" >> beam.FlatMap(_confirmed))
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
