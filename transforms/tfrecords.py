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
from apache_beam import coders
from apache_beam.io import filebasedsink
from apache_beam.io.filesystem import CompressionTypes

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


class _GzipTFRecordSink(filebasedsink.FileBasedSink):
    def __init__(self, file_path_prefix: str, file_name_suffix: str):
        super().__init__(
            file_path_prefix,
            coder=coders.BytesCoder(),
            file_name_suffix=file_name_suffix,
            mime_type="application/octet-stream",
            compression_type=CompressionTypes.UNCOMPRESSED,  # compressed by _HuffmanGzipWriter
        )

    def open(self, temp_path):
        return _HuffmanGzipWriter(super().open(temp_path))

    def write_encoded_record(self, file_handle, encoded_value: bytes) -> None:
        file_handle.write(frame_record(encoded_value))


class WriteToGzipTFRecord(beam.PTransform):
    """bytes -> gzip TFRecord shards PREFIX-SSSSS-of-NNNNN SUFFIX; the runner picks the shard count."""

    def __init__(self, file_path_prefix: str, *, file_name_suffix: str):
        super().__init__()
        self._sink = _GzipTFRecordSink(file_path_prefix, file_name_suffix)

    def expand(self, records):
        return records | beam.io.Write(self._sink)
