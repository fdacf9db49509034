"""The tag files an output holds, read a file at a time for only the rows a run needs: the held tracks that
share index keys with the new ones (held_words), or those whose column takes one of a few values
(held_rows_where). A runner then carries the few rows a run uses, not every held row of the catalogue
(ReadFromParquet of the whole output held them all in the DirectRunner's memory at once).
"""

from __future__ import annotations

from collections.abc import Iterator

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from transforms import duplicates

HELD, NEW = "held:", "new:"  # the two sides' track ids, apart in the clustering


def read_files(pipeline: beam.Pipeline, paths: list[str], label: str) -> beam.PCollection:
    """The held files' paths, spread over workers: one such source per scan. Scans whose side inputs depend
    on one another's output must not share it: a runner that fuses the consumers of one source into one
    stage would make that stage wait for its own output (the DirectRunner stops with "watermark-pending
    bundles did not execute")."""
    return pipeline | f"{label}Files" >> beam.Create(sorted(paths)) | f"{label}Spread" >> beam.Reshuffle()


def fingerprint_batches(path: str, columns: list[str]) -> Iterator[tuple[pa.RecordBatch, np.ndarray, np.ndarray]]:
    """A tag file's rows in batches -> (the batch's `columns`, its fingerprints' words concatenated, each row's
    word count): arrays, not Python lists of words. None for a file from before the fingerprint existed."""
    with FileSystems.open(path) as handle:
        parquet = pq.ParquetFile(handle)
        if "fingerprint" not in parquet.schema_arrow.names:
            return
        for batch in parquet.iter_batches(columns=[*columns, "fingerprint"], batch_size=4096):
            prints = batch.column("fingerprint")
            lengths = prints.value_lengths().fill_null(0).to_numpy(zero_copy_only=False)
            yield batch, prints.flatten().to_numpy(zero_copy_only=False).astype(np.uint32, copy=False), lengths


def held_words(path: str, new_keys: np.ndarray, model_version: str | None = None) -> Iterator[tuple[str, np.ndarray]]:
    """A tag file -> (HELD + track id, words) of its tracks that share at least MIN_SHARED_KEYS index keys with
    the new tracks: no other can be a candidate, so the rest of the catalogue is never indexed (an incremental
    run of a few files against a million held tracks). `model_version`: only the rows of that model."""
    if not len(new_keys):
        return
    columns = ["track_id", *(["model_version"] if model_version is not None else [])]
    for batch, words, lengths in fingerprint_batches(path, columns):
        ends = np.cumsum(lengths)
        shared = duplicates.shared_key_counts(words, lengths, new_keys)
        if model_version is not None:
            shared[np.asarray(batch.column("model_version").to_pylist()) != model_version] = 0
        ids = batch.column("track_id").to_pylist()
        for i in np.flatnonzero(shared >= duplicates.MIN_SHARED_KEYS):
            yield HELD + ids[i], words[ends[i] - lengths[i]:ends[i]]


class KeysOf(beam.CombineFn):
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


def held_rows_where(path: str, column: str, values: frozenset, model_version: str) -> Iterator[tuple[str, dict]]:
    """A tag file -> (value, whole row) of this model's rows whose `column` is in `values`: the two columns
    read first, the whole file only when a row matches."""
    with FileSystems.open(path) as handle:
        parquet = pq.ParquetFile(handle)
        if column not in parquet.schema_arrow.names or not values:
            return
        keys = parquet.read(columns=[column, "model_version"])
        wanted = pc.and_kleene(pc.is_in(keys.column(column), value_set=pa.array(sorted(values))),
                               pc.equal(keys.column("model_version"), model_version)).fill_null(False)
        positions = np.flatnonzero(wanted.to_numpy(zero_copy_only=False))
        if not len(positions):
            return
        rows = parquet.read().take(positions).to_pylist()
    for row in rows:
        yield row[column], row


class SetOf(beam.CombineFn):
    """Values -> one frozenset of them (a side input of the few values a scan of the held files looks for)."""

    def create_accumulator(self):
        return set()

    def add_input(self, accumulator, value):
        accumulator.add(value)
        return accumulator

    def merge_accumulators(self, accumulators):
        return set().union(*accumulators)

    def extract_output(self, accumulator):
        return frozenset(accumulator)
