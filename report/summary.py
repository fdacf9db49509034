"""What a tag output holds, summarized for the report in one pass over its files.

The tag files are read in record batches of a few columns, so memory stays flat in the number of
tracks: counts and histograms grow with the vocabulary, not the catalogue; the listed tables keep at
most `MAX_LISTED` rows (the tracks most in need of review, the first failures of each kind); the
embedding map keeps a sample of `MAP_SAMPLE` tracks, chosen by a hash of the track id so that the
same catalogue always maps the same tracks, whatever the order of the files.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import pathlib
import re

import numpy as np
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from schemas import tags
from schemas.tag_output import TagOutput

MAX_LISTED = 1000
MAP_SAMPLE = 2000
CONFIDENCE_BINS = 20
_COLUMNS = ["track_id", "uri", "genre", "confidence", "tags", "low_confidence", "review_reason", "typicality",
            "duration_s", "model_version", "tagged_at", tags.GENRE_SOURCE, "model_genre", "bpm", "key",
            "loudness_lufs", "health_flags", "recording_id", "duplicate_of", "true_peak_dbtp"]
# The descriptor histograms: tempo in 10 BPM bins, integrated loudness in 2 LU bins (values beyond the
# ends are counted in the end bins).
BPM_EDGES = np.arange(40.0, 221.0, 10.0)
LUFS_EDGES = np.arange(-40.0, 0.1, 2.0)


@dataclasses.dataclass
class TagSummary:
    model_version: str
    rows: int = 0
    flagged: int = 0
    silent: int = 0
    audio_s: float = 0.0
    genres: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    tags: collections.Counter = dataclasses.field(default_factory=collections.Counter)  # tracks carrying each
    reasons: collections.Counter = dataclasses.field(default_factory=collections.Counter)  # why flagged
    confidence_counts: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(CONFIDENCE_BINS, np.int64))
    flagged_rows: list[dict] = dataclasses.field(default_factory=list)  # the MAX_LISTED least confident
    map_rows: list[dict] = dataclasses.field(default_factory=list)  # the sample for the embedding map
    other_versions: dict[str, int] = dataclasses.field(default_factory=dict)  # rows of other model versions
    labels: list[str] = dataclasses.field(default_factory=list)
    # Tracks a person labelled (genre_source "review"): how many, how many of those the model had right
    # (its genre the reviewer's label), how many are no music; and the sum of the others' confidences.
    reviewed: int = 0
    reviewed_model_right: int = 0
    reviewed_not_music: int = 0
    model_confidence_sum: float = 0.0
    # Descriptors (tracks with each: a tempo, a key, a loudness), as histograms and counts.
    bpm_counts: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(len(BPM_EDGES) - 1, np.int64))
    lufs_counts: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(len(LUFS_EDGES) - 1, np.int64))
    keys: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    with_bpm: int = 0
    with_loudness: int = 0
    # Health: tracks per flag, tracks checked and with any flag, the worst (most flags) and the copies.
    health: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    checked: int = 0
    unhealthy: int = 0
    copies: int = 0
    unhealthy_rows: list[dict] = dataclasses.field(default_factory=list)
    copy_rows: list[dict] = dataclasses.field(default_factory=list)

    @property
    def expected_right(self) -> float | None:
        """The share of tracks with audio whose genre is right, as the confidences and reviews imply: reviewed
        tracks count as right, the others by their (calibrated) confidence."""
        with_audio = self.rows - self.silent
        return (self.reviewed + self.model_confidence_sum) / with_audio if with_audio else None

    @property
    def confidence_edges(self) -> np.ndarray:
        return np.linspace(0.0, 1.0, CONFIDENCE_BINS + 1)


@dataclasses.dataclass
class ErrorSummary:
    count: int = 0
    by_stage: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    by_reason: collections.Counter = dataclasses.field(default_factory=collections.Counter)  # (stage, reason)
    listed: list[dict] = dataclasses.field(default_factory=list)


def latest_model_version(files: list[str]) -> str:
    """The model version of the most recently tagged row: the run a user just made."""
    latest, version = None, None
    for path in files:
        with FileSystems.open(path) as handle:
            table = pq.read_table(handle, columns=["model_version", "tagged_at"])
        if table.num_rows:
            index = int(np.argmax(table["tagged_at"].to_numpy()))
            when = table["tagged_at"][index].as_py()
            if latest is None or when > latest:
                latest, version = when, table["model_version"][index].as_py()
    if version is None:
        raise ValueError("the tag output holds no rows")
    return version


def summarize_tags(files: list[str], model_version: str) -> TagSummary:
    """One pass over the tag files: the rows of `model_version` summarized, the others counted."""
    summary = TagSummary(model_version)
    flagged = Smallest(MAX_LISTED)  # the least confident, then by track id
    unhealthy = Smallest(MAX_LISTED)  # the most health flags, then by track id
    copies = Smallest(MAX_LISTED)  # by recording, then track id
    sample = Smallest(MAP_SAMPLE)  # by a hash of the track id: a fixed, order-free sample
    for path in files:
        with FileSystems.open(path) as handle:
            parquet = pq.ParquetFile(handle)
            metadata = parquet.schema_arrow.metadata or {}
            columns = [c for c in _COLUMNS if c in parquet.schema_arrow.names]
            for batch in parquet.iter_batches(columns=[*columns, "embedding"], batch_size=4096):
                embeddings = _matrix(batch.column("embedding"))  # numpy: 200 floats a row stay out of Python
                data = batch.drop_columns(["embedding"]).to_pydict()
                for index in range(batch.num_rows):
                    version = data["model_version"][index]
                    if version != model_version:
                        summary.other_versions[version] = summary.other_versions.get(version, 0) + 1
                        continue
                    if not summary.labels and tags.META_LABELS in metadata:
                        summary.labels = json.loads(metadata[tags.META_LABELS])
                    row = {name: data[name][index] for name in columns}
                    _count(summary, row)
                    if row["low_confidence"]:
                        flagged.add((row["confidence"], row["track_id"]), _listed(row))
                    if row.get("health_flags"):
                        unhealthy.add((-len(row["health_flags"]), row["track_id"]), {
                            "track_id": row["track_id"], "flags": ", ".join(row["health_flags"]),
                            "true_peak_dbtp": row.get("true_peak_dbtp")})
                    if row.get("duplicate_of"):
                        copies.add((row["recording_id"], row["track_id"]), {
                            "track_id": row["track_id"], "duplicate_of": row["duplicate_of"],
                            "recording_id": row["recording_id"]})
                    if row["genre"] is not None:  # a silent track's zeros are no place on the map
                        digest = hashlib.blake2b(row["track_id"].encode(), digest_size=8).digest()
                        sample.add((digest, row["track_id"]), {"track_id": row["track_id"], "genre": row["genre"],
                                                              "embedding": embeddings[index].copy()})
    summary.flagged_rows = flagged.items()
    summary.unhealthy_rows = unhealthy.items()
    summary.copy_rows = copies.items()
    summary.map_rows = sorted(sample.items(), key=lambda row: row["track_id"])
    return summary


class Smallest:
    """The `size` items of smallest key seen so far, in memory bounded by 2 x size."""

    def __init__(self, size: int):
        self._size = size
        self._items: list[tuple] = []

    def add(self, key: tuple, item) -> None:
        self._items.append((key, item))
        if len(self._items) >= 2 * self._size:
            self._trim()

    def items(self) -> list:
        self._trim()
        return [item for _, item in self._items]

    def _trim(self) -> None:
        self._items.sort(key=lambda pair: pair[0])
        del self._items[self._size:]


def _matrix(column) -> np.ndarray:
    """A fixed-size list column as a [rows, dim] float32 array (a view of Arrow's buffer where it can)."""
    column = column.combine_chunks() if hasattr(column, "combine_chunks") else column
    dim = column.type.list_size
    return column.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)


def _count(summary: TagSummary, row: dict) -> None:
    summary.rows += 1
    summary.audio_s += row["duration_s"]
    _count_descriptors(summary, row)
    if row.get("health_flags") is not None:
        summary.checked += 1
        summary.unhealthy += bool(row["health_flags"])
        summary.health.update(row["health_flags"])
    summary.copies += bool(row.get("duplicate_of"))
    if row.get(tags.GENRE_SOURCE) == tags.BY_REVIEW:
        summary.reviewed += 1
        summary.reviewed_model_right += int(row.get("model_genre") is not None and row["model_genre"] == row["genre"])
        if row["genre"] is None:
            summary.reviewed_not_music += 1
            return
    elif row["genre"] is not None:
        summary.model_confidence_sum += float(row["confidence"])
    if row["low_confidence"]:
        summary.flagged += 1
        summary.reasons[row["review_reason"] or "flagged"] += 1
    if row["genre"] is None:
        summary.silent += 1
        return
    summary.genres[row["genre"]] += 1
    for entry in row["tags"] or []:
        summary.tags[entry["label"]] += 1
    summary.confidence_counts[min(int(row["confidence"] * CONFIDENCE_BINS), CONFIDENCE_BINS - 1)] += 1


def _count_descriptors(summary: TagSummary, row: dict) -> None:
    if row.get("bpm") is not None:
        summary.with_bpm += 1
        summary.bpm_counts[_bin(row["bpm"], BPM_EDGES)] += 1
    if row.get("loudness_lufs") is not None:
        summary.with_loudness += 1
        summary.lufs_counts[_bin(row["loudness_lufs"], LUFS_EDGES)] += 1
    if row.get("key") is not None:
        summary.keys[row["key"]] += 1


def _bin(value: float, edges: np.ndarray) -> int:
    return int(np.clip(np.searchsorted(edges, value, side="right") - 1, 0, len(edges) - 2))


def _listed(row: dict) -> dict:
    return {"track_id": row["track_id"], "uri": row["uri"], "genre": row["genre"],
            "confidence": round(float(row["confidence"]), 3),
            "typicality": None if row.get("typicality") is None else round(float(row["typicality"]), 3),
            "review_reason": row["review_reason"] or "",
            "tags": ", ".join(f"{t['label']} {t['score']:.2f}" for t in row["tags"] or [])}


def embedding_map(rows: list[dict]) -> np.ndarray:
    """The sample's embeddings on their first two principal components ([n, 2]; zeros when fewer than 2)."""
    if len(rows) < 2:
        return np.zeros((len(rows), 2))
    embeddings = np.asarray([row["embedding"] for row in rows], np.float64)
    centred = embeddings - embeddings.mean(axis=0)
    _, _, components = np.linalg.svd(centred, full_matrices=False)
    points = centred @ components[:2].T
    return points if points.shape[1] == 2 else np.c_[points, np.zeros(len(points))]


def summarize_errors(output: TagOutput) -> ErrorSummary:
    """OUT/_errors/ (the latest run's failed inputs): counts by stage and by reason, the first MAX_LISTED."""
    summary = ErrorSummary()
    for path in output.error_files():
        with FileSystems.open(path) as handle:
            for batch in pq.ParquetFile(handle).iter_batches(batch_size=4096):
                for row in batch.to_pylist():
                    summary.count += 1
                    summary.by_stage[row["stage"]] += 1
                    summary.by_reason[(row["stage"], reason_kind(row["error"], row["uri"]))] += 1
                    if len(summary.listed) < MAX_LISTED:
                        summary.listed.append(row)
    return summary


def reason_kind(error: str, uri: str) -> str:
    """An error message with the file's own details taken out, so that failures of one kind group:
    the path and name of the file, and numbers (sizes, offsets, sample rates)."""
    text = error.replace(uri, "FILE").replace(pathlib.PurePath(uri).name, "FILE")
    text = re.sub(r"\d+(\.\d+)?", "N", text)
    return text[:160]
