"""The embedded database's vector index: one HNSW graph (usearch) per model version, kept in files
beside the DuckDB file, so that `cattag similar` stays in milliseconds at millions of tracks where
DuckDB's exact scan grows with the catalogue (271 ms at 10^6 tracks, bench/RESULTS.md). DuckDB's own
`vss` extension is not an option: it is a download, and its PyPI build exists only for an older
DuckDB than this project pins. Measured against faiss before choosing (bench/ann_choice.py).

    catalogue.duckdb
    catalogue.duckdb.vectors/
        <slug>.json                        which shard files are current, and which database state they index
        <slug>-<generation>-<shard>.usearch  one shard's graph over cosine distance, float32 vectors; a
                                           track's key is a 64-bit hash of its id
        <slug>-<generation>-<shard>.npz    per key, sorted: the key, the track id, its genre and confidence

The index is cut into shards of at most SHARD_ROWS tracks, each its own graph, searched together
and merged: building one holds one shard in memory (about 1.1 kB a 200-d track), not the
catalogue (1.8 GB at 10^6 tracks as one graph), and a small load rewrites only the shards it
touches. A shard is named by the generation that wrote it; a load's untouched shards keep their
files.

A `similar` through the index reads nothing from DuckDB but the model version's state: the query's
vector comes from a graph, the neighbours' ids, genres and confidences from the arrays (a point
lookup in DuckDB scans: 32 ms at 10^6 rows). Writers write new shard files and then replace the
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
# Tracks a shard: a build holds one shard's graph in memory (about 110 MB of 200-d tracks), and a
# search visits every shard, all at once on as many cores (bench/load_bench.py: memory and latency
# at 10^6 tracks: 10 shards).
SHARD_ROWS = 100_000


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

    def slice(self, start: int, stop: int) -> Tracks:
        return Tracks(self.ids[start:stop], self.vectors[start:stop], self.genres[start:stop],
                      self.confidences[start:stop])


def track_keys(track_ids: Iterable[str]) -> np.ndarray:
    """The index key of each track id: the first 8 bytes of its BLAKE2b digest, as uint64."""
    return np.array([int.from_bytes(hashlib.blake2b(t.encode(), digest_size=8).digest(), "little")
                     for t in track_ids], dtype=np.uint64)


class VectorIndexes:
    """The index files of one database file."""

    def __init__(self, database_path: str | os.PathLike, *, shard_rows: int = SHARD_ROWS):
        self.folder = pathlib.Path(f"{database_path}.vectors")
        self.shard_rows = shard_rows
        self._open: dict[str, tuple[list[str], Searcher]] = {}

    def _slug(self, model_version: str) -> str:
        return hashlib.sha256(model_version.encode()).hexdigest()[:16]

    def _manifest(self, model_version: str) -> dict | None:
        try:
            manifest = json.loads((self.folder / f"{self._slug(model_version)}.json").read_text())
        except FileNotFoundError:
            return None
        if "shards" not in manifest:  # written before the index had shards: one graph
            manifest["shards"] = [manifest["files"]]
        return manifest

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
        if cached is not None and cached[0] == manifest["shards"]:
            return cached[1]
        try:
            searcher = Searcher([_Shard.open(self.folder / files) for files in manifest["shards"]])
        except (FileNotFoundError, ValueError, RuntimeError):
            return None  # replaced by a writer since the manifest was read: the caller searches exactly
        self._open[model_version] = (manifest["shards"], searcher)
        return searcher

    def build(self, model_version: str, batches: Iterator[Tracks], state: State) -> int:
        """Builds the version's index afresh from batches of its tracks, one shard of at most
        shard_rows in memory at a time; returns its size. Minutes at 10^6 tracks on 2 cores: a
        progress line every PROGRESS_EVERY_S."""
        previous = self._manifest(model_version)
        generation = previous["generation"] + 1 if previous else 1
        written: list[str] = []
        index, parts, added, reported = None, [], 0, time.monotonic()
        _LOG.info("model %s: building its HNSW vector index over %d embeddings", model_version, state.rows)
        try:
            for batch in _cut(batches, self.shard_rows):
                if index is None:
                    index, parts = _new_index(batch.vectors.shape[1]), []
                keys = track_keys(batch.ids)
                index.add(keys, batch.vectors)
                parts.append(_Arrays.of(keys, batch))
                added += len(keys)
                if len(index) >= self.shard_rows:
                    written.append(self._save_shard(model_version, generation, len(written), index, parts))
                    index = None  # freed before the next shard is built
                if time.monotonic() - reported >= PROGRESS_EVERY_S:
                    _LOG.info("model %s: HNSW index %d/%d embeddings (%.0f%%)", model_version, added, state.rows,
                              100.0 * added / max(state.rows, 1))
                    reported = time.monotonic()
            if index is not None:
                written.append(self._save_shard(model_version, generation, len(written), index, parts))
        except BaseException:
            self._remove(written)
            raise
        if not written:
            self.drop(model_version)
            return 0
        self._commit(model_version, generation, written, state, added, previous)
        return added

    def update(self, model_version: str, upserts: Tracks, removed: list[str], state: State) -> int:
        """Applies a small load to the version's existing index: new and changed embeddings in (into
        the last shard while it has room), embeddings of tracks now silent out. Rewrites only the
        shards that change; returns the index's size."""
        previous = self._manifest(model_version)
        generation = previous["generation"] + 1
        shards = list(previous["shards"])
        new_keys = track_keys(upserts.ids)
        stale = np.concatenate([new_keys, track_keys(removed)])
        written: list[str] = []
        size = 0
        try:
            for at, files in enumerate(shards):
                keys = _Arrays.load_keys(self.folder / f"{files}.npz")
                adding = at == len(shards) - 1 and 0 < len(new_keys) <= self.shard_rows - len(keys)
                if not adding and not np.isin(stale, keys).any():
                    size += len(keys)
                    continue  # untouched: its files stay
                shard = _Shard.restore(self.folder / files)
                present = stale[shard.index.contains(stale)] if len(stale) else stale
                if len(present):
                    shard.index.remove(present)
                parts = [shard.arrays.without(stale)]
                size += len(parts[0].keys)
                if adding:
                    shard.index.add(new_keys, upserts.vectors)
                    parts.append(_Arrays.of(new_keys, upserts))
                    size += len(new_keys)
                    new_keys = new_keys[:0]
                shards[at] = self._save_shard(model_version, generation, at, shard.index, parts)
                written.append(shards[at])
            if len(new_keys):  # the last shard is full: a new one
                index = _new_index(upserts.vectors.shape[1])
                index.add(new_keys, upserts.vectors)
                shards.append(self._save_shard(model_version, generation, len(shards), index,
                                               [_Arrays.of(new_keys, upserts)]))
                written.append(shards[-1])
                size += len(new_keys)
        except BaseException:
            self._remove(written)
            raise
        self._commit(model_version, generation, shards, state, size, previous)
        return size

    def drop(self, model_version: str) -> None:
        manifest = self._manifest(model_version)
        if manifest is None:
            return
        (self.folder / f"{self._slug(model_version)}.json").unlink()
        self._remove(manifest["shards"])

    def _save_shard(self, model_version: str, generation: int, at: int, index, parts: list[_Arrays]) -> str:
        self.folder.mkdir(parents=True, exist_ok=True)
        files = f"{self._slug(model_version)}-{generation}-{at}"
        index.save(str(self.folder / f"{files}.usearch"))
        _Arrays.concatenate(parts).sorted().save(str(self.folder / f"{files}.npz"))
        return files

    def _commit(self, model_version: str, generation: int, shards: list[str], state: State, size: int,
                previous: dict | None) -> None:
        """Makes `shards` the version's index in one rename, then removes the files no longer in it."""
        slug = self._slug(model_version)
        manifest = {"model_version": model_version, "generation": generation, "shards": shards,
                    "rows": state.rows, "tagged_at": state.tagged_at, "size": size}
        temporary = self.folder / f"{slug}.json.tmp"
        temporary.write_text(json.dumps(manifest, indent=1))
        os.replace(temporary, self.folder / f"{slug}.json")  # readers now see the new files
        if previous:
            self._remove([files for files in previous["shards"] if files not in shards])

    def _remove(self, shards: list[str]) -> None:
        for files in shards:
            for suffix in (".usearch", ".npz"):
                (self.folder / f"{files}{suffix}").unlink(missing_ok=True)


def _cut(batches: Iterator[Tracks], rows: int) -> Iterator[Tracks]:
    """The batches again, each cut where it would cross a multiple of `rows` tracks, so that a
    shard holds exactly `rows` (its last part ends a batch)."""
    seen = 0
    for batch in batches:
        start = 0
        while start < len(batch.ids):
            stop = min(len(batch.ids), start + rows - seen % rows)
            yield batch if (start, stop) == (0, len(batch.ids)) else batch.slice(start, stop)
            seen += stop - start
            start = stop


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
    def load(cls, path: str | os.PathLike) -> _Arrays:
        with np.load(path) as saved:
            return cls(saved["keys"], saved["ids"], saved["genre_codes"], saved["confidences"], saved["genres"])

    @staticmethod
    def load_keys(path: str | os.PathLike) -> np.ndarray:
        with np.load(path) as saved:
            return saved["keys"]

    def find(self, keys: np.ndarray) -> np.ndarray:
        """Each key's row, or -1 where the key is not here."""
        if not len(self.keys):
            return np.full(len(keys), -1)
        at = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        return np.where(self.keys[at] == keys, at, -1)


@dataclasses.dataclass
class _Shard:
    index: object  # usearch.index.Index
    arrays: _Arrays

    @classmethod
    def open(cls, base: pathlib.Path) -> _Shard:
        """Memory-mapped, for searching."""
        from usearch.index import Index

        return cls(Index.restore(f"{base}.usearch", view=True), _Arrays.load(f"{base}.npz"))

    @classmethod
    def restore(cls, base: pathlib.Path) -> _Shard:
        """Read whole, for changing."""
        from usearch.index import Index

        return cls(Index.restore(f"{base}.usearch"), _Arrays.load(f"{base}.npz"))


class Searcher:
    """Searches every shard of an index at once (usearch's Indexes: one thread a shard, up to the
    machine's cores) and merges their answers."""

    def __init__(self, shards: list[_Shard]):
        from usearch.index import Indexes

        self.shards = shards  # memory-mapped
        self._all = Indexes(indexes=[shard.index for shard in shards])

    def vector(self, track_id: str) -> np.ndarray | None:
        """The track's embedding as the index holds it (float32), or None when it has none."""
        key = track_keys([track_id])[0]
        for shard in self.shards:
            if shard.index.contains(key):
                return np.asarray(shard.index.get(key), dtype=np.float32)
        return None

    def nearest(self, vector: np.ndarray, count: int) -> list[tuple[str, str | None, float, float]]:
        """(track id, genre, confidence, cosine similarity) of about the `count` nearest embeddings."""
        for shard in self.shards:  # the merged search uses each shard's own setting
            shard.index.expansion_search = max(EXPANSION_SEARCH, count)
        found = self._all.search(np.asarray(vector, np.float32), count, threads=0)
        keys, distances = np.asarray(found.keys, dtype=np.uint64), np.asarray(found.distances)
        results = []
        for a in (shard.arrays for shard in self.shards):
            at = a.find(keys)
            results += [(float(distances[j]), a.ids[i].decode(),
                         str(a.genres[a.genre_codes[i]]) if a.genre_codes[i] >= 0 else None, float(a.confidences[i]))
                        for j, i in enumerate(at) if i >= 0]
        results.sort()
        return [(track_id, genre, confidence, 1.0 - distance) for distance, track_id, genre, confidence in results]


def _new_index(dim: int):
    from usearch.index import Index

    # float32 vectors, though float16 had the same recall at 2x10^5 tracks (0.963 at ef 128) with a 28%
    # faster build and half the file (bench/ann_choice.py): with float32 the search's own distances are
    # the similarities `similar` reports and the graph holds each query's exact embedding.
    return Index(ndim=dim, metric="cos", dtype="f32", connectivity=_CONNECTIVITY, expansion_add=_EXPANSION_ADD)
