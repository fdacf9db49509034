"""transforms/shards.py and transforms/parquet_shards.py: output sized by data, read back by pyarrow and DuckDB."""

from __future__ import annotations

import apache_beam as beam
import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from transforms.parquet_shards import ParquetFormat, WriteToParquetShards
from transforms.shards import create_file, plan_shards

SCHEMA = pa.schema([("track_id", pa.string()), ("embedding", pa.list_(pa.float32(), 4))],
                   metadata={b"cattag.model_version": b"m1"})


def rows(n: int, start: int = 0) -> list[dict]:
    noise = np.random.default_rng(start).random((n, 4), dtype=np.float32)  # incompressible, as embeddings are
    return [{"track_id": f"t{i:05d}", "embedding": noise[i - start].tolist()} for i in range(start, start + n)]


def test_plan_keeps_big_files_alone_and_groups_small_ones_up_to_the_size():
    sizes = {"a": 300, "b": 40, "c": 40, "d": 40, "e": 90, "f": 10}
    assert plan_shards(sizes, 100, mergeable=False) == [["a"], ["b"], ["c"], ["d"], ["e"], ["f"]]
    assert plan_shards(sizes, 100, mergeable=True) == [["a"], ["b", "c"], ["d"], ["e", "f"]]
    assert plan_shards({}, 100, mergeable=True) == []


def test_the_pipeline_writes_every_row_once_in_shards_readers_take(tmp_path):
    with beam.Pipeline() as pipeline:
        _ = (pipeline | beam.Create(rows(5000)) | beam.Reshuffle()
             | WriteToParquetShards(str(tmp_path / "tags-run"), SCHEMA, max_shard_bytes=30_000, row_group_bytes=8_000))
    shards = sorted(tmp_path.glob("tags-run-*-of-*.parquet"))
    assert len(shards) >= 2 and shards[0].name.endswith(f"-of-{len(shards):05d}.parquet")
    assert not list(tmp_path.glob(".temp-*"))  # the temporary folder is gone
    table = pq.read_table(shards)
    assert sorted(table.column("track_id").to_pylist()) == [f"t{i:05d}" for i in range(5000)]
    files = [pq.ParquetFile(shard) for shard in shards]
    assert all(f.schema_arrow.metadata[b"cattag.model_version"] == b"m1" for f in files)
    assert max(f.metadata.num_row_groups for f in files) > 1  # row groups close at row_group_bytes
    (count,), = duckdb.sql(f"SELECT count(DISTINCT track_id) FROM read_parquet('{tmp_path}/tags-run-*.parquet')").fetchall()
    assert count == 5000


def test_no_rows_still_give_one_readable_empty_shard(tmp_path):
    with beam.Pipeline() as pipeline:
        _ = pipeline | beam.Create([]) | WriteToParquetShards(str(tmp_path / "tags-run"), SCHEMA)
    shards = list(tmp_path.glob("tags-run-*.parquet"))
    assert [s.name for s in shards] == ["tags-run-00000-of-00001.parquet"]
    assert pq.read_table(shards[0]).num_rows == 0 and pq.read_schema(shards[0]).names == SCHEMA.names


def test_merge_keeps_order_and_rebatches_small_files_into_large_row_groups(tmp_path):
    fmt = ParquetFormat(SCHEMA, row_group_bytes=1 << 20)
    sources = []
    for part in range(4):  # four small files of 300 rows, as four Flink bundles would leave
        path = str(tmp_path / f"part{part}.parquet")
        writer = fmt.open(create_file(path, str(tmp_path)))
        for r in rows(300, start=300 * part):
            writer.write(r)
        writer.close()
        sources.append(path)
    fmt.merge(sources, str(tmp_path / "merged" / "shard.parquet"))
    merged = pq.ParquetFile(tmp_path / "merged" / "shard.parquet")
    assert merged.metadata.num_row_groups == 1 and merged.metadata.num_rows == 1200
    assert merged.read().column("track_id").to_pylist() == [f"t{i:05d}" for i in range(1200)]
