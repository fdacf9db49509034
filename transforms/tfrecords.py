"""WriteToGzipTFRecord: gzip TFRecord shards written with Huffman-only deflate.

Beam's WriteToTFRecord compresses with zlib's default strategy, whose LZ77 match search finds
next to nothing in float16 spectrogram bytes: on GTZAN log-mels it reaches the same 0.90 ratio
as Huffman-only coding at 3.4x the CPU (1.29 vs 0.38 ms per 33 kB record). The files are
ordinary gzip TFRecords: tf.data and Beam read them with compression_type GZIP.
"""

from __future__ import annotations

import struct
import uuid
import zlib
from collections.abc import Iterator

import apache_beam as beam
import google_crc32c
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

_GZIP_WBITS = 31  # 16 + 15: a gzip header and trailer around a 32 KiB-window deflate stream


def masked_crc32c(data: bytes) -> int:
    """The CRC TFRecord framing uses: CRC-32C, rotated and offset so that CRCs of CRCs stay strong."""
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame_record(data: bytes) -> bytes:
    """uint64 length, masked CRC of the length, the data, masked CRC of the data."""
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc32c(length)) + data + struct.pack("<I", masked_crc32c(data))


class _HuffmanGzipWriter:
    """A write-only gzip stream over a raw file handle."""

    def __init__(self, raw):
        self._raw = raw
        self._deflate = zlib.compressobj(6, zlib.DEFLATED, _GZIP_WBITS, 9, zlib.Z_HUFFMAN_ONLY)

    def write(self, data: bytes) -> None:
        self._raw.write(self._deflate.compress(data))

    def close(self) -> None:
        self._raw.write(self._deflate.flush())
        self._raw.close()


class _WriteBundleFiles(beam.DoFn):
    """records -> temporary files, one or more per bundle, each closed at `max_bytes` (uncompressed)."""

    def __init__(self, temp_dir: str, max_bytes: int):
        self._temp_dir = temp_dir
        self._max_bytes = max_bytes

    def start_bundle(self) -> None:
        self._writer, self._path, self._bytes = None, None, 0

    def process(self, record: bytes) -> Iterator[str]:
        if self._writer is not None and self._bytes >= self._max_bytes:
            yield self._close()
        if self._writer is None:
            self._path = FileSystems.join(self._temp_dir, f"{uuid.uuid4().hex}.part")
            try:
                raw = FileSystems.create(self._path, compression_type=CompressionTypes.UNCOMPRESSED)
            except OSError:  # a local folder that does not exist yet (object stores need none)
                FileSystems.mkdirs(self._temp_dir)
                raw = FileSystems.create(self._path, compression_type=CompressionTypes.UNCOMPRESSED)
            self._writer, self._bytes = _HuffmanGzipWriter(raw), 0
        framed = frame_record(record)
        self._writer.write(framed)
        self._bytes += len(framed)

    def finish_bundle(self) -> Iterator[WindowedValue]:
        if self._writer is not None:
            yield WindowedValue(self._close(), GlobalWindow().max_timestamp(), (GlobalWindow(),))

    def _close(self) -> str:
        self._writer.close()
        path, self._writer = self._path, None
        return path


def _finalize(keyed: tuple[None, list[str]], prefix: str, suffix: str, temp_dir: str) -> list[str]:
    """Renames the temporary files to PREFIX-SSSSS-of-NNNNN SUFFIX (one empty shard when there are none)
    and removes the temporary folder, with any file of a failed attempt that nothing emitted."""
    temp_paths = sorted(path for path in keyed[1] if path is not None)
    if not temp_paths:
        empty = FileSystems.join(temp_dir, "empty.part")
        _HuffmanGzipWriter(FileSystems.create(empty, compression_type=CompressionTypes.UNCOMPRESSED)).close()
        temp_paths = [empty]
    total = len(temp_paths)
    final = [f"{prefix}-{index:05d}-of-{total:05d}{suffix}" for index in range(total)]
    stale = FileSystems.match([f"{prefix}-*-of-*{suffix}"])[0].metadata_list
    if stale:  # shards of an earlier run into the same folder
        FileSystems.delete([m.path for m in stale])
    FileSystems.rename(temp_paths, final)
    FileSystems.delete([temp_dir])
    return final


class WriteToGzipTFRecord(beam.PTransform):
    """bytes -> gzip TFRecord shards PREFIX-SSSSS-of-NNNNN SUFFIX; returns the shards' final paths.

    Each bundle writes its own files (a new one every `max_shard_bytes`), so the shard count follows
    the data and the bundling, not the worker count; a last step renames them once all are written.
    Unlike Beam's WriteToTFRecord, the writing step takes no side input: runners that fuse only
    side-input-free steps (Flink's portable runner) keep it in the same stage as the encoding, and
    the records never cross from the Python workers into the runner (on Flink, about 0.8 GB for 2400
    GTZAN clips, which ran its TaskManager out of heap).
    """

    def __init__(self, file_path_prefix: str, *, file_name_suffix: str, max_shard_bytes: int = 256 << 20):
        super().__init__()
        self._prefix = file_path_prefix
        self._suffix = file_name_suffix
        self._max_bytes = max_shard_bytes

    def expand(self, records):
        folder, name = FileSystems.split(self._prefix)
        temp_dir = FileSystems.join(folder, f".temp-{name}-{uuid.uuid4().hex[:12]}")
        paths = (
            records
            | "WriteBundleFiles" >> beam.ParDo(_WriteBundleFiles(temp_dir, self._max_bytes))
            | "OneKey" >> beam.Map(lambda path: (None, path))
        )
        # A None beside the paths, so that the group fires (and writes an empty shard) with no records.
        always = records.pipeline | "Always" >> beam.Create([(None, None)])
        return (
            (paths, always)
            | "WithAlways" >> beam.Flatten()
            | "AllFiles" >> beam.GroupByKey()
            | "Finalize" >> beam.FlatMap(_finalize, prefix=self._prefix, suffix=self._suffix, temp_dir=temp_dir)
        )
