"""WriteShards: output files sized by the data, not by the worker count or the runner's bundling.

Each bundle writes its records to temporary files of its own (a new file every `max_bytes`), with no
side input, so that runners which fuse only side-input-free steps (Flink's portable runner) keep the
writing in the stage that produces the records. A last step, once every bundle has written, names
the files PREFIX-SSSSS-of-NNNNN SUFFIX. Formats whose files can be merged (Parquet) have the small
files of small bundles (Flink's bundles are 1000 elements) merged there into shards of about
`max_bytes`, so that a million-track run writes a few shards of a reader-friendly size, not a
thousand tiny files; other formats (gzip TFRecords) keep one shard per temporary file.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue


class ShardWriter(Protocol):
    def write(self, record: Any) -> int:
        """Writes one record; returns about how many bytes it added to the file."""

    def close(self) -> None: ...


class ShardFormat(Protocol):
    def open(self, raw) -> ShardWriter:
        """A writer over a raw binary file handle, which its close() closes."""

    # merge(sources, destination): writes the records of `sources` into the new file `destination`;
    # None when the format's files cannot be merged.
    merge: Callable[[list[str], str], None] | None


def create_file(path: str, folder: str):
    try:
        return FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED)
    except OSError:  # a local folder that does not exist yet (object stores need none)
        FileSystems.mkdirs(folder)
        return FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED)


class _WriteBundleFiles(beam.DoFn):
    """records -> temporary files, one or more per bundle, each closed at `max_bytes`."""

    def __init__(self, fmt: ShardFormat, temp_dir: str, max_bytes: int):
        self._format = fmt
        self._temp_dir = temp_dir
        self._max_bytes = max_bytes

    def start_bundle(self) -> None:
        self._writer, self._path, self._bytes = None, None, 0

    def process(self, record) -> Iterator[str]:
        if self._writer is not None and self._bytes >= self._max_bytes:
            yield self._close()
        if self._writer is None:
            self._path = FileSystems.join(self._temp_dir, f"{uuid.uuid4().hex}.part")
            self._writer, self._bytes = self._format.open(create_file(self._path, self._temp_dir)), 0
        self._bytes += self._writer.write(record)

    def finish_bundle(self) -> Iterator[WindowedValue]:
        if self._writer is not None:
            yield WindowedValue(self._close(), GlobalWindow().max_timestamp(), (GlobalWindow(),))

    def _close(self) -> str:
        self._writer.close()
        path, self._writer = self._path, None
        return path


def plan_shards(sizes: dict[str, int], max_bytes: int, mergeable: bool) -> list[list[str]]:
    """Temporary files (path -> bytes) grouped into shards: each file its own shard, or, when the
    format can merge, consecutive small files together until a shard reaches about max_bytes."""
    paths = sorted(sizes)
    if not mergeable:
        return [[path] for path in paths]
    shards, current, total = [], [], 0
    for path in paths:
        if current and total + sizes[path] > max_bytes:
            shards.append(current)
            current, total = [], 0
        current.append(path)
        total += sizes[path]
    if current:
        shards.append(current)
    return shards


def _finalize(keyed: tuple[None, list[str]], fmt: ShardFormat, prefix: str, suffix: str, temp_dir: str,
              max_bytes: int) -> list[str]:
    """Names (or merges) the temporary files as PREFIX-SSSSS-of-NNNNN SUFFIX (one empty shard when there
    are none) and removes the temporary folder, with any file of a failed attempt that nothing emitted."""
    temp_paths = [path for path in keyed[1] if path is not None]
    if not temp_paths:
        empty = FileSystems.join(temp_dir, "empty.part")
        fmt.open(create_file(empty, temp_dir)).close()
        temp_paths = [empty]
    sizes = dict.fromkeys(temp_paths, 0)
    if fmt.merge is not None:  # one match result per path
        sizes = {path: result.metadata_list[0].size_in_bytes
                 for path, result in zip(temp_paths, FileSystems.match(temp_paths))}
    shards = plan_shards(sizes, max_bytes, fmt.merge is not None)
    total = len(shards)
    final = [f"{prefix}-{index:05d}-of-{total:05d}{suffix}" for index in range(total)]
    stale = FileSystems.match([f"{prefix}-*-of-*{suffix}"])[0].metadata_list
    if stale:  # shards of an earlier run into the same folder
        FileSystems.delete([m.path for m in stale])
    renames = [(sources[0], path) for sources, path in zip(shards, final) if len(sources) == 1]
    for sources, path in zip(shards, final):
        if len(sources) > 1:
            fmt.merge(sources, path)
    if renames:
        FileSystems.rename([source for source, _ in renames], [path for _, path in renames])
    FileSystems.delete([temp_dir])
    return final


class WriteShards(beam.PTransform):
    """records -> shards PREFIX-SSSSS-of-NNNNN SUFFIX of the format; returns the shards' final paths."""

    def __init__(self, fmt: ShardFormat, file_path_prefix: str, *, file_name_suffix: str, max_shard_bytes: int):
        super().__init__()
        self._format = fmt
        self._prefix = file_path_prefix
        self._suffix = file_name_suffix
        self._max_bytes = max_shard_bytes

    def expand(self, records):
        folder, name = FileSystems.split(self._prefix)
        temp_dir = FileSystems.join(folder, f".temp-{name}-{uuid.uuid4().hex[:12]}")
        paths = (
            records
            | "WriteBundleFiles" >> beam.ParDo(_WriteBundleFiles(self._format, temp_dir, self._max_bytes))
            | "OneKey" >> beam.Map(lambda path: (None, path))
        )
        # A None beside the paths, so that the group fires (and writes an empty shard) with no records.
        always = records.pipeline | "Always" >> beam.Create([(None, None)])
        return (
            (paths, always)
            | "WithAlways" >> beam.Flatten()
            | "AllFiles" >> beam.GroupByKey()
            | "Finalize" >> beam.FlatMap(_finalize, fmt=self._format, prefix=self._prefix, suffix=self._suffix,
                                         temp_dir=temp_dir, max_bytes=self._max_bytes)
        )
