"""WriteToParquetShards: rows (dicts) -> Parquet shards of about 256 MB with row groups of about 64 MB.

Beam's WriteToParquet writes a file per bundle when the shard count is left to the runner: on Flink
(bundles of 1000 elements) a million-track tagging would write a thousand files of 1.5 MB, each one
a row group of a few hundred rows, which readers (DuckDB, Polars, Spark) read far slower than a few
large files. Here each bundle writes temporary files as transforms/shards.py does, and the last step
merges the small ones into shards of about `max_shard_bytes`, re-batching their rows into row groups
of about `row_group_bytes` (in memory, before compression): the size readers like (DuckDB and Arrow
parallelise over row groups; Spark and Parquet's own guidance say 64 MB to 1 GB).
"""

from __future__ import annotations

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from transforms.shards import WriteShards, create_file

_BATCH_ROWS = 1000  # rows converted to Arrow at a time


class _RowGroupWriter:
    """A ParquetWriter that writes its record batches in row groups of about `row_group_bytes`."""

    def __init__(self, raw, schema: pa.Schema, row_group_bytes: int):
        self._raw = raw
        # List items named "item", as in the declared Arrow schema (and as Beam's WriteToParquet wrote
        # them), not Parquet's "element": a file's schema then equals schemas/tags.py's exactly.
        self._writer = pq.ParquetWriter(raw, schema, use_compliant_nested_type=False)
        self._schema = schema
        self._row_group_bytes = row_group_bytes
        self._pending: list[pa.RecordBatch] = []
        self._pending_bytes = 0

    def write_batch(self, batch: pa.RecordBatch) -> None:
        self._pending.append(batch)
        self._pending_bytes += batch.nbytes
        if self._pending_bytes >= self._row_group_bytes:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            table = pa.Table.from_batches(self._pending, schema=self._schema)
            self._writer.write_table(table, row_group_size=table.num_rows)  # one row group
        self._pending, self._pending_bytes = [], 0

    def close(self) -> None:
        self._flush()
        self._writer.close()
        self._raw.close()


class _RowWriter:
    """Rows (dicts) -> a Parquet file, `_BATCH_ROWS` rows converted at a time."""

    def __init__(self, raw, schema: pa.Schema, row_group_bytes: int):
        self._schema = schema
        self._file = _RowGroupWriter(raw, schema, row_group_bytes)
        self._rows: list[dict] = []

    def write(self, row: dict) -> int:
        self._rows.append(row)
        return self._convert() if len(self._rows) >= _BATCH_ROWS else 0

    def _convert(self) -> int:
        batch = pa.RecordBatch.from_pylist(self._rows, schema=self._schema)
        self._rows = []
        self._file.write_batch(batch)
        return batch.nbytes

    def close(self) -> None:
        if self._rows:
            self._convert()
        self._file.close()


class ParquetFormat:
    """Parquet files of `schema` for WriteShards; small files are merged into larger shards."""

    def __init__(self, schema: pa.Schema, row_group_bytes: int = 64 << 20):
        self._schema = schema
        self._row_group_bytes = row_group_bytes

    def open(self, raw) -> _RowWriter:
        return _RowWriter(raw, self._schema, self._row_group_bytes)

    def merge(self, sources: list[str], destination: str) -> None:
        """The rows of `sources`, in order, into one new file, re-batched into large row groups."""
        writer = _RowGroupWriter(create_file(destination, FileSystems.split(destination)[0]), self._schema,
                                 self._row_group_bytes)
        for source in sources:
            with FileSystems.open(source, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
                for batch in pq.ParquetFile(handle).iter_batches(batch_size=_BATCH_ROWS * 10):
                    writer.write_batch(batch)
        writer.close()


class WriteToParquetShards(beam.PTransform):
    """rows -> PREFIX-SSSSS-of-NNNNN SUFFIX Parquet shards of `schema`; returns the shards' final paths."""

    def __init__(self, file_path_prefix: str, schema: pa.Schema, *, file_name_suffix: str = ".parquet",
                 max_shard_bytes: int = 256 << 20, row_group_bytes: int = 64 << 20):
        super().__init__()
        self._shards = WriteShards(ParquetFormat(schema, row_group_bytes), file_path_prefix,
                                   file_name_suffix=file_name_suffix, max_shard_bytes=max_shard_bytes)

    def expand(self, rows):
        return rows | self._shards
