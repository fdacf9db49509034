"""Numpy arrays spilled to temporary files, so that a Beam shuffle carries their address, not the arrays.

Why: a runner that holds its shuffles in memory (the DirectRunner, Prism) would otherwise hold every array
of the run at once: ClusterCopies' index and fingerprints are about 2 kB a track, 2 GB at a million tracks
(bench/cluster_scale.py). Written out, each shuffle holds a few hundred bytes per file, and the step after
it reads back only its own shard's sections.

One file holds many sections (one per shard a bundle wrote), each an .npz of its own at a byte range, so
that a bundle writes one file however many shards there are. The folder must be one that every worker
reaches (the pipelines put it inside their output folder, like transforms/shards.py's temporary files).
"""

from __future__ import annotations

import io
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
            buffer = io.BytesIO()
            np.savez(buffer, **arrays)
            data = buffer.getvalue()
            handle.write(data)
            sections.append((key, (path, start, len(data))))
            start += len(data)
    return sections


def read_section(section: Section) -> dict[str, np.ndarray]:
    path, start, length = section
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        handle.seek(start)
        data = handle.read(length)
    with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
        return {name: arrays[name] for name in arrays.files}


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
