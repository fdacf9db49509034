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

from transforms import duplicates
from transforms.duplicate_steps import ClusterCopies
from transforms.reuse_copies import HELD, NEW

_RECORDING_COLUMNS = ("track_id", "recording_id", "duplicate_of", "tagged_at")


def _held_words(path: str, new_keys: np.ndarray) -> Iterator[tuple[str, np.ndarray]]:
    """A tag file -> (HELD + track id, words) of its tracks that share at least MIN_SHARED_KEYS index keys with
    the new tracks: no other can be a candidate, so the rest of the catalogue is never indexed (an incremental
    run of a few files against a million held tracks). Read as arrays, not as Python lists of words."""
    with FileSystems.open(path) as handle:
        parquet = pq.ParquetFile(handle)
        if "fingerprint" not in parquet.schema_arrow.names or not len(new_keys):
            return
        for batch in parquet.iter_batches(columns=["track_id", "fingerprint"], batch_size=4096):
            prints = batch.column("fingerprint")
            lengths = prints.value_lengths().fill_null(0).to_numpy(zero_copy_only=False)
            words = prints.flatten().to_numpy(zero_copy_only=False).astype(np.uint32, copy=False)
            ends = np.cumsum(lengths)
            shared = duplicates.shared_key_counts(words, lengths, new_keys)
            ids = batch.column("track_id").to_pylist()
            for i in np.flatnonzero(shared >= duplicates.MIN_SHARED_KEYS):
                yield HELD + ids[i], words[ends[i] - lengths[i]:ends[i]]


class _KeysOf(beam.CombineFn):
    """Fingerprints -> the distinct index keys of them all, sorted."""

    def create_accumulator(self):
        return []

    def add_input(self, keys, words):
        keys.append(duplicates.index_keys(np.asarray(words, np.uint32)))
        return keys

    def merge_accumulators(self, accumulators):
        return [np.unique(np.concatenate([k for keys in accumulators for k in keys] or [np.zeros(0, np.uint32)]))]

    def extract_output(self, keys):
        return np.unique(np.concatenate(keys or [np.zeros(0, np.uint32)]))


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
    smallest held track id (its latest row); a held row with no recording id (a watch's) is its own."""
    held = min(rows, key=lambda row: (row["track_id"], -row["tagged_at"].timestamp() if row.get("tagged_at") else 0.0))
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
        files = rows.pipeline | "HeldFiles" >> beam.Create(self._held_files) | "SpreadFiles" >> beam.Reshuffle()
        new_words = rows | "NewWords" >> beam.FlatMap(
            lambda row: [(NEW + row["track_id"], np.asarray(row["fingerprint"], np.uint32))] if row.get("fingerprint") else [])
        new_keys = beam.pvalue.AsSingleton(
            new_words | "NewFingerprints" >> beam.Values() | "NewKeys" >> beam.CombineGlobally(_KeysOf()))
        words = ((files | "HeldWords" >> beam.FlatMap(_held_words, new_keys), new_words) | "AllWords" >> beam.Flatten())
        clusters = beam.pvalue.AsSingleton(words | "ClusterCopies" >> ClusterCopies(self._temp_dir, only_pairs_with=NEW))
        links = beam.pvalue.AsDict(
            files
            | "HeldInClusters" >> beam.FlatMap(_held_in_clusters, clusters)
            | "ByCluster" >> beam.GroupByKey()
            | "HeldLink" >> beam.MapTuple(lambda cluster, members: (cluster, held_link(list(members)))))
        return rows | "Link" >> beam.Map(linked, clusters, links)
