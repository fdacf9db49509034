"""WriteToGzipTFRecord: gzip TFRecord shards written with Huffman-only deflate.

Beam's WriteToTFRecord compresses with zlib's default strategy, whose LZ77 match search finds
next to nothing in float16 spectrogram bytes: on GTZAN log-mels it reaches the same 0.90 ratio
as Huffman-only coding at 3.4x the CPU (1.29 vs 0.38 ms per 33 kB record). The files are
ordinary gzip TFRecords: tf.data and Beam read them with compression_type GZIP.
"""

from __future__ import annotations

import struct
import zlib

import apache_beam as beam
import google_crc32c

from transforms.shards import WriteShards

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
    """A write-only gzip stream over a raw file handle; cut() ends a gzip member there (readers of gzip,
    Beam's and TensorFlow's among them, read the members of a file one after another), so that the
    bytes of the records before and after it can be moved apart without decompressing them."""

    def __init__(self, raw):
        self._raw = raw
        self._deflate = None
        self._offset = 0  # compressed bytes written to raw

    def write(self, data: bytes) -> None:
        if self._deflate is None:
            self._deflate = zlib.compressobj(6, zlib.DEFLATED, _GZIP_WBITS, 9, zlib.Z_HUFFMAN_ONLY)
        self._put(self._deflate.compress(data))

    def cut(self) -> int:
        """Ends the member being written (if any); returns the byte offset the next one starts at."""
        if self._deflate is not None:
            self._put(self._deflate.flush())
            self._deflate = None
        return self._offset

    def close(self) -> None:
        if self._deflate is None and self._offset == 0:
            self.write(b"")  # an empty file is still one gzip member
        self.cut()
        self._raw.close()

    def _put(self, data: bytes) -> None:
        self._raw.write(data)
        self._offset += len(data)


class GzipTFRecordFormat:
    """Gzip TFRecord files for WriteShards: each temporary file is a shard (no merging). Its files can
    be cut between records (a gzip member each side), which WriteShardsTo's moves need."""

    merge = None

    def open(self, raw) -> _TFRecordWriter:
        return _TFRecordWriter(_HuffmanGzipWriter(raw))


class _TFRecordWriter:
    def __init__(self, gzip: _HuffmanGzipWriter):
        self._gzip = gzip

    def write(self, record: bytes) -> int:
        framed = frame_record(record)
        self._gzip.write(framed)
        return len(framed)  # uncompressed: shards close at max_shard_bytes of records

    def cut(self) -> int:
        return self._gzip.cut()

    def close(self) -> None:
        self._gzip.close()


class WriteToGzipTFRecord(beam.PTransform):
    """bytes -> gzip TFRecord shards PREFIX-SSSSS-of-NNNNN SUFFIX; returns the shards' final paths.

    Through transforms/shards.py's WriteShards: each bundle writes its own files (a new one every
    `max_shard_bytes` of records), so the shard count follows the data, not the worker count. Unlike
    Beam's WriteToTFRecord, the writing step takes no side input: runners that fuse only
    side-input-free steps (Flink's portable runner) keep it in the same stage as the encoding, and
    the records never cross from the Python workers into the runner (on Flink, about 0.8 GB for 2400
    GTZAN clips, which ran its TaskManager out of heap).
    """

    def __init__(self, file_path_prefix: str, *, file_name_suffix: str, max_shard_bytes: int = 256 << 20):
        super().__init__()
        self._shards = WriteShards(GzipTFRecordFormat(), file_path_prefix, file_name_suffix=file_name_suffix,
                                   max_shard_bytes=max_shard_bytes)

    def expand(self, records):
        return records | self._shards
