"""Numpy arrays spilled to temporary files, so that a Beam shuffle carries their address, not the arrays.

Why: a runner that holds its shuffles in memory (the DirectRunner, Prism) would otherwise hold every array
of the run at once: ClusterCopies' index and fingerprints are about 2 kB a track, 2 GB at a million tracks
(bench/cluster_scale.py). Written out, each shuffle holds a few hundred bytes per file, and the step after
it reads back only its own shard's sections.

One file holds many sections (one per shard a bundle wrote), each its arrays at a byte range, so
that a bundle writes one file however many shards there are. The folder must be one that every worker
reaches (the pipelines put it inside their output folder, like transforms/shards.py's temporary files).
"""

from __future__ import annotations

import json
import struct
import uuid
from collections.abc import Hashable, Iterable

import numpy as np
from apache_beam.io.filesystem import BeamIOError, CompressionTypes
from apache_beam.io.filesystems import FileSystems

from transforms.shards import create_file

Section = tuple[str, int, int]  # file, first byte, length


def write_sections(folder: str, parts: Iterable[tuple[Hashable, dict[str, np.ndarray]]]) -> list[tuple[Hashable, Section]]:
    """Writes each (key, arrays) as one section of a new file in `folder` -> (key, its section) each.
    No file when there are no parts."""
    parts = list(parts)
    if not parts:
        return []
    path = FileSystems.join(folder, f"{uuid.uuid4().hex}.sections")
    sections, start = [], 0
    with create_file(path, folder) as handle:
        for key, arrays in parts:
            data = _encoded(arrays)
            handle.write(data)
            sections.append((key, (path, start, len(data))))
            start += len(data)
    return sections


def read_sections(sections: Iterable[Section]) -> list[dict[str, np.ndarray]]:
    """The arrays of each section, in the order given; each file is opened once."""
    sections = list(sections)
    found: list[dict[str, np.ndarray] | None] = [None] * len(sections)
    by_file: dict[str, list[int]] = {}
    for i, (path, _, _) in enumerate(sections):
        by_file.setdefault(path, []).append(i)
    for path, positions in by_file.items():
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            for i in sorted(positions, key=lambda i: sections[i][1]):
                _, start, length = sections[i]
                handle.seek(start)
                found[i] = _decoded(handle.read(length))
    return found


def _encoded(arrays: dict[str, np.ndarray]) -> bytes:
    """Arrays as a length-prefixed JSON header (names, dtypes, shapes) then their raw bytes: a tenth of
    the time of an .npz per section, which many small sections (a small catalogue's shards) add up."""
    arrays = {name: np.ascontiguousarray(array) for name, array in arrays.items()}
    header = json.dumps([(name, array.dtype.str, array.shape) for name, array in arrays.items()]).encode()
    return b"".join([struct.pack("<I", len(header)), header, *(array.tobytes() for array in arrays.values())])


def _decoded(data: bytes) -> dict[str, np.ndarray]:
    (size,) = struct.unpack_from("<I", data)
    at, arrays = 4 + size, {}
    for name, dtype, shape in json.loads(data[4:at]):
        dtype = np.dtype(dtype)
        count = int(np.prod(shape, dtype=np.int64))
        arrays[name] = np.frombuffer(data, dtype, count, at).reshape(shape)
        at += count * dtype.itemsize
    return arrays


def remove_folder(folder: str) -> None:
    """Removes a spill folder; one already gone (a retried step) is not an error."""
    try:
        if FileSystems.exists(folder):
            FileSystems.delete([folder])
    except BeamIOError:
        pass


def new_folder(parent: str) -> str:
    """A folder of its own for one transform of one job, under `parent`."""
    return FileSystems.join(parent, f".temp-spill-{uuid.uuid4().hex}")
