"""WriteShards: output files sized by the data, not by the worker count or the runner's bundling.

Each bundle writes its records to temporary files of its own (a new file every `max_bytes`), with no
side input, so that runners which fuse only side-input-free steps (Flink's portable runner) keep the
writing in the stage that produces the records. A last step, once every bundle has written, names
the files PREFIX-SSSSS-of-NNNNN SUFFIX. Formats whose files can be merged (Parquet) have the small
files of small bundles (Flink's bundles are 1000 elements) merged there into shards of about
`max_bytes`, so that a million-track run writes a few shards of a reader-friendly size, not a
thousand tiny files; other formats (gzip TFRecords) keep one shard per temporary file.

WriteShardsTo writes several outputs at once, each record keyed by its destination (featurize's
three splits and its errors): one naming step for all of them, where a WriteShards per output adds
three stages each to the job (every stage is a round of bundles on every worker, which a small job
pays in start-up: bench/RESULTS.md).

Records whose destination is only known late (featurize's examples: a track's split depends on its
copies, found across the whole run) are written at once where their producer sends them, each with a
key (its track), the file cut between keys; a side input `moves` {key: destination} then sends those that
belong elsewhere there, as bytes cut out of the temporary files that hold them (no record is decoded or
encoded again). Holding the records back until the moves are known instead keeps every record of the run
in the runner's memory (bench/RESULTS.md, issue 26).
"""

from __future__ import annotations

import dataclasses
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

    # cut() -> int (formats of movable destinations): ends the file's records so far at a point where its
    # bytes may be cut in two, each part a valid file of the format; returns that point's byte offset.


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


@dataclasses.dataclass(frozen=True)
class Destination:
    """One output: shards PREFIX-SSSSS-of-NNNNN SUFFIX of a format, each about max_bytes."""
    format: ShardFormat
    prefix: str
    suffix: str
    max_bytes: int = 256 << 20
    # Its records are (key, record) pairs, which WriteShardsTo's `moves` may send to another movable
    # destination of the same format; the format's writers cut() files between records of different keys.
    movable: bool = False

    def temp_dir(self, run: str) -> str:
        folder, name = FileSystems.split(self.prefix)
        return FileSystems.join(folder, f".temp-{name}-{run}")


def _new_temp_file(destination: Destination, run: str) -> tuple[ShardWriter, str]:
    temp_dir = destination.temp_dir(run)
    path = FileSystems.join(temp_dir, f"{uuid.uuid4().hex}.part")
    return destination.format.open(create_file(path, temp_dir)), path


class _WriteBundleFiles(beam.DoFn):
    """(destination, record) -> (destination, (temporary file, its records' keys)): one or more files per
    destination a bundle writes to, each closed at its destination's max_bytes. The keys, for a movable
    destination (None for others), are runs [key, records, end byte offset], in the order of the file."""

    def __init__(self, destinations: dict[str, Destination], run: str):
        self._destinations = destinations
        self._run = run

    def start_bundle(self) -> None:
        self._open: dict[str, list] = {}  # destination -> [writer, path, bytes, key runs or None]

    def process(self, keyed) -> Iterator[tuple[str, tuple[str, list | None]]]:
        key, record = keyed
        destination = self._destinations[key]
        current = self._open.get(key)
        if current is not None and current[2] >= destination.max_bytes:
            yield key, self._close(key)
            current = None
        if current is None:
            current = self._open[key] = [*_new_temp_file(destination, self._run), 0,
                                         [] if destination.movable else None]
        if destination.movable:
            record_key, record = record
            runs = current[3]
            if runs and runs[-1][0] == record_key:
                runs[-1][1] += 1
            else:
                if runs:
                    runs[-1][2] = current[0].cut()
                runs.append([record_key, 1, None])
        current[2] += current[0].write(record)

    def finish_bundle(self) -> Iterator[WindowedValue]:
        for key in list(self._open):
            yield WindowedValue((key, self._close(key)), GlobalWindow().max_timestamp(), (GlobalWindow(),))

    def _close(self, key: str) -> tuple[str, list | None]:
        writer, path, _, runs = self._open.pop(key)
        if runs:
            runs[-1][2] = writer.cut()
        writer.close()
        return path, runs


class _MoveRecords(beam.DoFn):
    """(destination, (temporary file, key runs)) -> (final destination, temporary file): a file none of
    whose records moves is kept as it is; one that holds a record `moves` sends elsewhere is cut between
    its runs, and the parts copied (bytes, not records) to new files of their final destinations. (The old
    file goes with the temporary folder, so that a retried attempt finds it again.)"""

    def __init__(self, destinations: dict[str, Destination], run: str):
        self._destinations = destinations
        self._run = run

    def process(self, element, moves: dict[str, str]) -> Iterator[tuple[str, str]]:
        key, (path, runs) = element
        if not runs or all(moves.get(record_key, key) == key for record_key, _, _ in runs):
            yield key, path
            return
        files: dict[str, tuple[Any, str]] = {}  # final destination -> (raw file, path)
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as source:
            start = 0
            for record_key, _, end in runs:
                target = moves.get(record_key, key)
                if target not in files:
                    temp_dir = self._destinations[target].temp_dir(self._run)
                    new_path = FileSystems.join(temp_dir, f"{uuid.uuid4().hex}.part")
                    files[target] = (create_file(new_path, temp_dir), new_path)
                part = source.read(end - start)
                if len(part) != end - start:
                    raise ValueError(f"{path} is shorter than what was written to it")
                files[target][0].write(part)
                start = end
        for target, (raw, new_path) in files.items():
            raw.close()
            yield target, new_path


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


def _finalize(keyed: tuple[str, list[str | None]], destinations: dict[str, Destination], run: str
              ) -> Iterator[str]:
    """Names (or merges) a destination's temporary files as PREFIX-SSSSS-of-NNNNN SUFFIX (one empty
    shard when there are none) and removes its temporary folder, with any file of a failed attempt
    that nothing emitted."""
    key, paths = keyed
    destination = destinations[key]
    fmt, prefix, suffix, temp_dir = destination.format, destination.prefix, destination.suffix, destination.temp_dir(run)
    temp_paths = [path for path in paths if path is not None]
    if not temp_paths:
        empty = FileSystems.join(temp_dir, "empty.part")
        fmt.open(create_file(empty, temp_dir)).close()
        temp_paths = [empty]
    sizes = dict.fromkeys(temp_paths, 0)
    if fmt.merge is not None:  # one match result per path
        sizes = {path: result.metadata_list[0].size_in_bytes
                 for path, result in zip(temp_paths, FileSystems.match(temp_paths))}
    shards = plan_shards(sizes, destination.max_bytes, fmt.merge is not None)
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
    yield from final


class WriteShardsTo(beam.PTransform):
    """(destination name, record), from one PCollection or several -> each destination's shards;
    returns every shard's final path. Every destination gets its shards, one empty shard when no
    record went to it."""

    def __init__(self, destinations: dict[str, Destination], *, moves: beam.pvalue.AsSideInput | None = None):
        """`moves`: a side input {record key: destination name} for the records of movable destinations
        that belong elsewhere than where they were sent (the rest stay)."""
        super().__init__()
        self._destinations = dict(destinations)
        self._moves = moves

    def expand(self, keyed_records):
        run = uuid.uuid4().hex[:12]
        # Each input written where it is produced: a Flatten of the records before the writing step
        # would be materialized whole first (every record of a run, held in memory on the DirectRunner).
        inputs = keyed_records if isinstance(keyed_records, (tuple, list)) else (keyed_records,)
        written = [records | f"WriteBundleFiles{'' if i == 0 else i}" >> beam.ParDo(
            _WriteBundleFiles(self._destinations, run)) for i, records in enumerate(inputs)]
        if self._moves is not None:
            paths = [files | f"MoveRecords{'' if i == 0 else i}" >> beam.ParDo(
                _MoveRecords(self._destinations, run), self._moves) for i, files in enumerate(written)]
        else:
            paths = [files | f"Paths{'' if i == 0 else i}" >> beam.MapTuple(lambda key, file: (key, file[0]))
                     for i, files in enumerate(written)]
        # A None beside each destination's paths, so that its group fires (and writes an empty shard)
        # with no records.
        # (Not reshuffled: a Create of several elements otherwise adds a stage to spread four tuples.)
        always = inputs[0].pipeline | "Always" >> beam.Create([(key, None) for key in self._destinations],
                                                              reshuffle=False)
        return (
            (*paths, always)
            | "WithAlways" >> beam.Flatten()
            | "AllFiles" >> beam.GroupByKey()
            | "Finalize" >> beam.FlatMap(_finalize, destinations=self._destinations, run=run)
        )


class WriteShards(beam.PTransform):
    """records -> shards PREFIX-SSSSS-of-NNNNN SUFFIX of the format; returns the shards' final paths."""

    def __init__(self, fmt: ShardFormat, file_path_prefix: str, *, file_name_suffix: str, max_shard_bytes: int):
        super().__init__()
        self._destination = Destination(fmt, file_path_prefix, file_name_suffix, max_shard_bytes)

    def expand(self, records):
        return (records
                | "ToDestination" >> beam.Map(lambda record: ("", record))
                | WriteShardsTo({"": self._destination}))
