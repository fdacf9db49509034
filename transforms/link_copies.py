"""LinkHeldCopies: in a `cattag tag --skip-existing` run, a new track that is a copy of a track the output
already holds (from an earlier run, a watch, or another model version) joins that track's recording, so
that copies share one `recording_id` across runs and `cattag similar` leaves them out of each other's
neighbours however they arrived.

    held tag files --fingerprints sharing index keys with a new one--> (HELD+id, words) ┐
    the run's rows (recording ids found within the run) -------------> (NEW+id, words) ┴-> ClusterCopies(pairs with
        a new track only) -> for each cluster with a held track: that track's recording id, and its preferred
        copy -> the new rows of the cluster take them; the rest keep the ids of their own run

The held rows are not rewritten (their files belong to earlier runs): a new file that would be the better
copy (lossless where the held one is lossy) still points at the held copy, as a reused row does.
The cost: the held fingerprints are read again each run, and only the held tracks sharing index keys with
a new one are indexed and aligned (bench/RESULTS.md, bench/link_cost.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import apache_beam as beam
import numpy as np
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from schemas.tag_output import TagOutput
from transforms import duplicates
from transforms.duplicate_steps import ClusterCopies
from transforms.held_tags import HELD, NEW, KeysOf, fingerprint_batches, held_words, read_files

_RECORDING_COLUMNS = ("track_id", "recording_id", "duplicate_of", "tagged_at")


def _held_in_clusters(path: str, clusters: dict) -> Iterator[tuple[str, dict]]:
    """A tag file -> (cluster, recording columns) of its rows that are in a cluster with a new track."""
    with FileSystems.open(path) as handle:
        parquet = pq.ParquetFile(handle)
        names = parquet.schema_arrow.names
        if "fingerprint" not in names:
            return
        present = [name for name in _RECORDING_COLUMNS if name in names]
        for batch in parquet.iter_batches(columns=present, batch_size=4096):
            for row in batch.to_pylist():
                cluster = clusters.get(HELD + row["track_id"])
                if cluster is not None:
                    yield cluster, row


def held_link(rows: list[dict]) -> tuple[str, str]:
    """The held rows of one cluster -> (recording id, preferred copy) that its new members take: those of the
    first by _held_order; a held row with no recording id (an older watch's) is its own recording."""
    held = min(rows, key=_held_order)
    return (held.get("recording_id") or duplicates.own_recording_id(held["track_id"]),
            held.get("duplicate_of") or held["track_id"])


def linked(row: dict, clusters: dict, links: dict) -> dict:
    """A new row with the recording of the held copy its cluster holds, if any."""
    link = links.get(clusters.get(NEW + row["track_id"], ""))
    if link is None:
        return row
    recording, preferred = link
    return {**row, "recording_id": recording, "duplicate_of": None if preferred == row["track_id"] else preferred}


class LinkHeldCopies(beam.PTransform):
    """Tag rows of this run -> the same rows, the copies of held tracks in their recordings. `held_files`:
    the output's tag files when the run was planned (not its own); `temp_dir`: as ClusterCopies'."""

    def __init__(self, held_files: list[str], temp_dir: str):
        super().__init__()
        self._held_files = sorted(held_files)
        self._temp_dir = temp_dir

    def expand(self, rows):
        # The held files are read twice, the fingerprints then the recording columns of the few held tracks
        # with a new copy, so that no runner holds every held row while the clusters are found.
        new_words = rows | "NewWords" >> beam.FlatMap(
            lambda row: [(NEW + row["track_id"], np.asarray(row["fingerprint"], np.uint32))] if row.get("fingerprint") else [])
        new_keys = beam.pvalue.AsSingleton(
            new_words | "NewFingerprints" >> beam.Values() | "NewKeys" >> beam.CombineGlobally(KeysOf()))
        words = ((read_files(rows.pipeline, self._held_files, "Words") | "HeldWords" >> beam.FlatMap(held_words, new_keys),
                  new_words) | "AllWords" >> beam.Flatten())
        clusters = beam.pvalue.AsSingleton(words | "ClusterCopies" >> ClusterCopies(self._temp_dir, only_pairs_with=NEW))
        links = beam.pvalue.AsDict(
            read_files(rows.pipeline, self._held_files, "InClusters")
            | "HeldInClusters" >> beam.FlatMap(_held_in_clusters, clusters)
            | "ByCluster" >> beam.GroupByKey()
            | "HeldLink" >> beam.MapTuple(lambda cluster, members: (cluster, held_link(list(members)))))
        return rows | "Link" >> beam.Map(linked, clusters, links)


class _FileKeys:
    """One held tag file's index: its rows' index keys, sorted, each with its row number."""

    def __init__(self, path: str):
        keys, rows = [np.zeros(0, np.uint32)], [np.zeros(0, np.int64)]
        first = 0
        for _, words, lengths in fingerprint_batches(path, []):
            batch_keys, of = duplicates.batch_index_keys(words, lengths)
            keys.append(batch_keys)
            rows.append(of + first)
            first += len(lengths)
        keys, rows = np.concatenate(keys), np.concatenate(rows)
        order = np.argsort(keys, kind="stable")
        self.keys, self.rows = keys[order], rows[order].astype(np.int32)

    def candidates(self, keys: np.ndarray) -> np.ndarray:
        """The rows sharing at least MIN_SHARED_KEYS of `keys` (a fingerprint's index keys); a key held by
        more than MAX_TRACKS_PER_KEY rows counts for none, as in the index."""
        left = np.searchsorted(self.keys, keys, side="left")
        right = np.searchsorted(self.keys, keys, side="right")
        spans = [(a, b) for a, b in zip(left.tolist(), right.tolist()) if 0 < b - a <= duplicates.MAX_TRACKS_PER_KEY]
        if not spans:
            return np.zeros(0, np.int32)
        rows, counts = np.unique(np.concatenate([self.rows[a:b] for a, b in spans]), return_counts=True)
        return rows[counts >= duplicates.MIN_SHARED_KEYS]


class HeldRecordings:
    """The held copies of a few new tracks at a time (a watch's window): each held tag file's index keys,
    kept per file (a tag file is written once and never changed; a path whose size changed is read again),
    looked up for the new tracks' keys, and the candidates aligned.

    Memory: about 0.5 kB per held track (60 keys and row numbers); the first window reads every held file's
    fingerprints once (bench/RESULTS.md)."""

    def __init__(self, output: str):
        self._pattern = TagOutput(output).tags_pattern
        self._files: dict[tuple[str, int], _FileKeys] = {}

    def copies_of(self, words: dict[str, np.ndarray]) -> dict[str, dict]:
        """new track id -> the recording columns of one held copy of it (held_link's choice among them)."""
        matched = FileSystems.match([self._pattern])[0].metadata_list
        current = {(m.path, m.size_in_bytes) for m in matched}
        self._files = {key: index for key, index in self._files.items() if key in current}
        keys = {track: duplicates.index_keys(track_words) for track, track_words in words.items()}
        found: dict[str, list[dict]] = {}
        for path, size in sorted(current):
            index = self._files.get((path, size))
            if index is None:
                index = self._files[(path, size)] = _FileKeys(path)
            wanted = {track: index.candidates(track_keys) for track, track_keys in keys.items()}
            if not any(len(rows) for rows in wanted.values()):
                continue
            rows = _rows_of(path, sorted({int(r) for found_rows in wanted.values() for r in found_rows}))
            for track, candidates in wanted.items():
                for row in (rows[int(r)] for r in candidates):
                    if duplicates.is_copy(np.asarray(row["fingerprint"], np.uint32), words[track]):
                        found.setdefault(track, []).append({name: row.get(name) for name in _RECORDING_COLUMNS})
        return {track: min(held, key=_held_order) for track, held in found.items()}


def _rows_of(path: str, numbers: list[int]) -> dict[int, dict]:
    """Rows `numbers` of a tag file, with the copy columns: the file's columns read once, those rows taken."""
    with FileSystems.open(path) as handle:
        parquet = pq.ParquetFile(handle)
        present = [name for name in ("fingerprint", *_RECORDING_COLUMNS) if name in parquet.schema_arrow.names]
        table = parquet.read(columns=present)
    taken = table.take(numbers).to_pylist()
    return dict(zip(numbers, taken, strict=True))


def _held_order(row: dict) -> tuple:
    """Which held copy a new one follows: one already in a recording (a row a watch wrote before copies were
    linked has none), then the smallest track id, its latest row."""
    return (row.get("recording_id") is None, row["track_id"],
            -row["tagged_at"].timestamp() if row.get("tagged_at") else 0.0)


def link_window(rows: list[dict], held: HeldRecordings | None) -> list[dict]:
    """A watch window's rows -> the same rows with `recording_id` and `duplicate_of`: copies within the window
    share one recording (as FindCopies does in a batch run), and with `held`, a window's recording that has a
    copy in OUT joins that copy's recording (as LinkHeldCopies does)."""
    words = {row["track_id"]: np.asarray(row["fingerprint"], np.uint32) for row in rows if row.get("fingerprint")}
    confirmed = [(a, b) for a, b in duplicates.candidate_pairs(words)
                 if duplicates.is_copy(words[a], words[b])]
    recording = duplicates.recording_ids(sorted(words), confirmed)
    members: dict[str, list[dict]] = {}
    for row in rows:
        members.setdefault(recording.get(row["track_id"], duplicates.own_recording_id(row["track_id"])), []).append(row)
    copies = held.copies_of(words) if held is not None and words else {}
    out = []
    for recording_id, cluster in members.items():
        held_rows = [copies[row["track_id"]] for row in cluster if row["track_id"] in copies]
        if held_rows:
            recording_id, preferred = held_link(held_rows)
        else:
            preferred = min(cluster, key=lambda row: duplicates.preference(row["uri"], row.get("health_flags")))["track_id"]
        for row in cluster:
            out.append({**row, "recording_id": recording_id,
                        "duplicate_of": None if preferred == row["track_id"] else preferred})
    return sorted(out, key=lambda row: row["track_id"])
