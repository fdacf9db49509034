"""The embedded database's vector index: one HNSW graph (usearch) per model version, kept in files
beside the DuckDB file, so that `cattag similar` stays in milliseconds at millions of tracks where
DuckDB's exact scan grows with the catalogue (271 ms at 10^6 tracks, bench/RESULTS.md). DuckDB's own
`vss` extension is not an option: it is a download, and its PyPI build exists only for an older
DuckDB than this project pins. Measured against faiss before choosing (bench/ann_choice.py).

    catalogue.duckdb
    catalogue.duckdb.vectors/
        <slug>.json                  what the current files are, and which database state they index
        <slug>-<generation>.usearch  the graph over cosine distance, float32 vectors; a track's key is
                                     a 64-bit hash of its id, so keys need no allocation
        <slug>-<generation>.npz      per key, sorted: the key, the track id, its genre and confidence

A `similar` through the index reads nothing from DuckDB but the model version's state: the query's
vector comes from the graph, the neighbours' ids, genres and confidences from the arrays (a point
lookup in DuckDB scans: 32 ms at 10^6 rows). Writers write a new generation and then replace the
JSON file in one rename, so a reader sees the old files or the new ones, never a mix. The JSON
records the database's state of the model version when the files were written (embeddings count
and latest tagged_at); a reader whose database differs (a load that died between its commit and the
index, an older cattag) searches exactly instead.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import pathlib
import time
from collections.abc import Iterable, Iterator

import numpy as np

_LOG = logging.getLogger(__name__)
PROGRESS_EVERY_S = 10.0

# A model version gets an index once it holds this many embeddings: below, an exact scan takes
# about 20 ms or less (bench/RESULTS.md) and is always right.
MIN_ROWS = 30_000
_CONNECTIVITY, _EXPANSION_ADD = 16, 128  # HNSW's M and efConstruction (pgvector's defaults: 16, 64)
EXPANSION_SEARCH = 256  # the search's ef (bench/load_bench.py: recall@10 and latency against ef at 10^6)


@dataclasses.dataclass(frozen=True)
class State:
    """What an index was built from: the model version's embeddings count and latest tagged_at."""
    rows: int
    tagged_at: str


@dataclasses.dataclass
class Tracks:
    """Rows for an index: ids, float32 [n, dim] embeddings, genres and confidences."""
    ids: list[str]
    vectors: np.ndarray
    genres: list[str | None]
    confidences: np.ndarray


def track_keys(track_ids: Iterable[str]) -> np.ndarray:
    """The index key of each track id: the first 8 bytes of its BLAKE2b digest, as uint64."""
    return np.array([int.from_bytes(hashlib.blake2b(t.encode(), digest_size=8).digest(), "little")
                     for t in track_ids], dtype=np.uint64)


class VectorIndexes:
    """The index files of one database file."""

    def __init__(self, database_path: str | os.PathLike):
        self.folder = pathlib.Path(f"{database_path}.vectors")
        self._open: dict[str, tuple[str, Searcher]] = {}

    def _slug(self, model_version: str) -> str:
        return hashlib.sha256(model_version.encode()).hexdigest()[:16]

    def _manifest(self, model_version: str) -> dict | None:
        try:
            return json.loads((self.folder / f"{self._slug(model_version)}.json").read_text())
        except FileNotFoundError:
            return None

    def state(self, model_version: str) -> State | None:
        manifest = self._manifest(model_version)
        return None if manifest is None else State(manifest["rows"], manifest["tagged_at"])

    def open(self, model_version: str, state: State) -> Searcher | None:
        """The model version's index if it indexes exactly `state`, else None (search exactly). Kept
        open for the next call while its files are current."""
        manifest = self._manifest(model_version)
        if manifest is None or State(manifest["rows"], manifest["tagged_at"]) != state:
            return None
        cached = self._open.get(model_version)
        if cached is not None and cached[0] == manifest["files"]:
            return cached[1]
        from usearch.index import Index

        base = self.folder / manifest["files"]
        try:
            searcher = Searcher(Index.restore(f"{base}.usearch", view=True), _Arrays.load(f"{base}.npz"))
        except (FileNotFoundError, ValueError, RuntimeError):
            return None  # replaced by a writer since the manifest was read: the caller searches exactly
        self._open[model_version] = (manifest["files"], searcher)
        return searcher

    def build(self, model_version: str, batches: Iterator[Tracks], state: State) -> int:
        """Builds the version's index afresh from batches of its tracks; returns its size. Minutes at
        10^6 tracks on 2 cores: a progress line every PROGRESS_EVERY_S."""
        index, parts, added, reported = None, [], 0, time.monotonic()
        _LOG.info("model %s: building its HNSW vector index over %d embeddings", model_version, state.rows)
        for batch in batches:
            if index is None:
                index = _new_index(batch.vectors.shape[1])
            keys = track_keys(batch.ids)
            index.add(keys, batch.vectors)
            parts.append(_Arrays.of(keys, batch))
            added += len(keys)
            if time.monotonic() - reported >= PROGRESS_EVERY_S:
                _LOG.info("model %s: HNSW index %d/%d embeddings (%.0f%%)", model_version, added, state.rows,
                          100.0 * added / max(state.rows, 1))
                reported = time.monotonic()
        if index is None:
            self.drop(model_version)
            return 0
        self._write(model_version, index, _Arrays.concatenate(parts), state)
        return len(index)

    def update(self, model_version: str, upserts: Tracks, removed: list[str], state: State) -> int:
        """Applies a small load to the version's existing index: new and changed embeddings in,
        embeddings of tracks now silent out. Returns the index's size."""
        from usearch.index import Index

        base = self.folder / self._manifest(model_version)["files"]
        index = Index.restore(f"{base}.usearch")
        arrays = _Arrays.load(f"{base}.npz")
        new_keys = track_keys(upserts.ids)
        stale = np.concatenate([new_keys, track_keys(removed)])
        present = stale[index.contains(stale)] if len(stale) else stale
        if len(present):
            index.remove(present)
        if len(new_keys):
            index.add(new_keys, upserts.vectors)
        kept = arrays.without(stale)
        self._write(model_version, index, _Arrays.concatenate([kept, _Arrays.of(new_keys, upserts)]), state)
        return len(index)

    def drop(self, model_version: str) -> None:
        manifest = self._manifest(model_version)
        if manifest is None:
            return
        (self.folder / f"{self._slug(model_version)}.json").unlink()
        self._remove_generation(manifest["files"])

    def _write(self, model_version: str, index, arrays: _Arrays, state: State) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        slug = self._slug(model_version)
        previous = self._manifest(model_version)
        generation = (previous["generation"] + 1) if previous else 1
        files = f"{slug}-{generation}"
        index.save(str(self.folder / f"{files}.usearch"))
        arrays.sorted().save(str(self.folder / f"{files}.npz"))
        manifest = {"model_version": model_version, "generation": generation, "files": files,
                    "rows": state.rows, "tagged_at": state.tagged_at, "dim": index.ndim, "size": len(index)}
        temporary = self.folder / f"{slug}.json.tmp"
        temporary.write_text(json.dumps(manifest, indent=1))
        os.replace(temporary, self.folder / f"{slug}.json")  # readers now see the new generation
        if previous:
            self._remove_generation(previous["files"])

    def _remove_generation(self, files: str) -> None:
        for suffix in (".usearch", ".npz"):
            (self.folder / f"{files}{suffix}").unlink(missing_ok=True)


@dataclasses.dataclass
class _Arrays:
    """Per key: the track id (bytes), genre (code into `genres`, -1 for none) and confidence."""
    keys: np.ndarray  # uint64
    ids: np.ndarray  # bytes
    genre_codes: np.ndarray  # int32
    confidences: np.ndarray  # float32
    genres: np.ndarray  # str: the vocabulary

    @classmethod
    def of(cls, keys: np.ndarray, tracks: Tracks) -> _Arrays:
        genres = sorted({g for g in tracks.genres if g is not None})
        code = {g: i for i, g in enumerate(genres)}
        return cls(keys, np.array([t.encode() for t in tracks.ids], dtype=bytes),
                   np.array([code.get(g, -1) for g in tracks.genres], dtype=np.int32),
                   np.asarray(tracks.confidences, dtype=np.float32), np.array(genres, dtype=str))

    @classmethod
    def concatenate(cls, parts: list[_Arrays]) -> _Arrays:
        vocabulary = sorted({str(g) for p in parts for g in p.genres})
        code = {g: i for i, g in enumerate(vocabulary)}
        # Each part's codes into the shared vocabulary; code -1 (no genre) picks the -1 appended last.
        codes = [np.array([code[str(g)] for g in p.genres] + [-1], dtype=np.int32)[p.genre_codes] for p in parts]
        width = max((p.ids.dtype.itemsize for p in parts), default=1)
        return cls(np.concatenate([p.keys for p in parts]), np.concatenate([p.ids.astype(f"S{width}") for p in parts]),
                   np.concatenate(codes), np.concatenate([p.confidences for p in parts]),
                   np.array(vocabulary, dtype=str))

    def without(self, keys: np.ndarray) -> _Arrays:
        keep = ~np.isin(self.keys, keys)
        return _Arrays(self.keys[keep], self.ids[keep], self.genre_codes[keep], self.confidences[keep], self.genres)

    def sorted(self) -> _Arrays:
        order = np.argsort(self.keys, kind="stable")
        keys = self.keys[order]
        if len(keys) > 1 and np.any(keys[1:] == keys[:-1]):
            raise ValueError("two track ids share a 64-bit key")
        return _Arrays(keys, self.ids[order], self.genre_codes[order], self.confidences[order], self.genres)

    def save(self, path: str) -> None:
        np.savez(path, keys=self.keys, ids=self.ids, genre_codes=self.genre_codes, confidences=self.confidences,
                 genres=self.genres)

    @classmethod
    def load(cls, path: str) -> _Arrays:
        with np.load(path) as saved:
            return cls(saved["keys"], saved["ids"], saved["genre_codes"], saved["confidences"], saved["genres"])


@dataclasses.dataclass
class Searcher:
    index: object  # usearch.index.Index, memory-mapped
    arrays: _Arrays

    def vector(self, track_id: str) -> np.ndarray | None:
        """The track's embedding as the index holds it (float32), or None when it has none."""
        key = track_keys([track_id])[0]
        return np.asarray(self.index.get(key), dtype=np.float32) if self.index.contains(key) else None

    def nearest(self, vector: np.ndarray, count: int) -> list[tuple[str, str | None, float, float]]:
        """(track id, genre, confidence, cosine similarity) of about the `count` nearest embeddings."""
        self.index.expansion_search = max(EXPANSION_SEARCH, count)
        found = self.index.search(np.asarray(vector, np.float32), count)
        keys = np.asarray(found.keys, dtype=np.uint64)
        a = self.arrays
        at = np.minimum(np.searchsorted(a.keys, keys), len(a.keys) - 1)
        return [(a.ids[i].decode(), str(a.genres[a.genre_codes[i]]) if a.genre_codes[i] >= 0 else None,
                 float(a.confidences[i]), 1.0 - float(distance))
                for i, key, distance in zip(at, keys, found.distances) if a.keys[i] == key]


def _new_index(dim: int):
    from usearch.index import Index

    # float32 vectors, though float16 had the same recall at 2x10^5 tracks (0.963 at ef 128) with a 28%
    # faster build and half the file (bench/ann_choice.py): with float32 the search's own distances are
    # the similarities `similar` reports and the graph holds each query's exact embedding.
    return Index(ndim=dim, metric="cos", dtype="f32", connectivity=_CONNECTIVITY, expansion_add=_EXPANSION_ADD)
