"""The embedded recommender database: a DuckDB file, opened per command. `similar` searches a model
version exactly until it holds vector_index.MIN_ROWS embeddings, then through an HNSW index kept in
files beside the database (database/vector_index.py), which `load` builds or updates after its
transaction commits."""

from __future__ import annotations

import logging
import pathlib
import re
import time
from collections.abc import Iterator

import numpy as np

from database.store import (
    LeavesOutCopies,
    DescriptorFilter,
    LoadResult,
    Neighbour,
    NeighbourFilter,
    Search,
    TagSearch,
    descriptor_search,
    descriptor_search_query,
    descriptors_query,
    matched_tags_query,
    recordings_query,
    no_embedding,
    no_track_tags,
    pick_model_version,
    resolve_tags,
    search_query,
    tag_search,
    unknown_track,
)
from database.vector_index import MIN_ROWS, SHARD_ROWS, State, Tracks, VectorIndexes
from schemas import catalogue_db as db

_LOG = logging.getLogger(__name__)
# A load that brings a model version at least this many embeddings and a quarter of what it holds
# rebuilds its vector index; smaller loads update it (as PostgreSQL's HNSW, postgres_store.BULK_ROWS).
BULK_ROWS = 10_000
_BATCH_ROWS = 50_000  # embeddings read at a time to build an index
# What a load may hold in memory before DuckDB spills to a temporary folder beside the database file:
# DuckDB's own default is 80% of the machine's memory, which a load of millions of rows takes (946 MiB
# for 2x10^5 rows). With 512 MB, 10^6 rows loaded in 22 s at 669 MiB peak; with 256 MB it ran out of
# memory (the tables' pages being written cannot all be spilled).
LOAD_MEMORY = "512MB"
# Rows a load replaces in one transaction at most; a load replacing more commits in parts of about this
# many. DuckDB holds what one transaction replaces in memory (its key indexes): replacing 10^6 rows in one
# ran out of memory at 512MB and peaked at 1.15 GB with 1GB (bench/RESULTS.md).
REPLACE_ROWS = 250_000
# DuckDB's memory limit while the committed embeddings are read into the vector index, whose shard
# (vector_index.SHARD_ROWS) is in memory beside it: the read needs little (its join spills), and
# DuckDB would otherwise keep up to LOAD_MEMORY of cached pages through the whole build. Reading
# 150,000 of 10^6 rows into shards of 100,000: peak RSS 524 MiB at 128MB, 772 MiB at 512MB; 64MB
# ran out of memory.
INDEX_READ_MEMORY = "128MB"
# How long a command waits for another process's lock on the file (a load in progress) before it
# gives up with the other process named: a second `cattag load` waits for the first.
LOCK_TIMEOUT_S = 120.0
_LOCK_POLL_S = 0.5


class DuckDB(LeavesOutCopies):
    def __init__(self, path: str, *, read_only: bool = False, vector_index: str = "hnsw",
                 index_min_rows: int = MIN_ROWS, index_shard_rows: int = SHARD_ROWS, load_memory: str = LOAD_MEMORY,
                 lock_timeout_s: float = LOCK_TIMEOUT_S):
        """read_only: for queries; the file must exist, and other readers may hold it too (a writer
        may not). vector_index "hnsw": model versions of at least index_min_rows embeddings get an
        HNSW index (searched by `similar`), in shards of index_shard_rows; "none": every search is
        exact, and load removes the index files. load_memory: DuckDB's memory limit while loading
        ("512MB", "2GB"). lock_timeout_s: how long to wait for another process's lock on the file
        (DuckDB: one writer, or many readers)."""
        if read_only and not pathlib.Path(path).is_file():
            raise FileNotFoundError(f"--db duckdb:///{path}: no such database file (`cattag load` creates it)")
        if not read_only:
            pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._con = _connect(path, read_only=read_only, timeout_s=lock_timeout_s)
        if not read_only:
            for statement in db.duckdb_ddl():
                self._con.execute(statement)
        self.vector_index = vector_index
        self._load_memory = load_memory
        self._index_min_rows = index_min_rows
        self._indexes = VectorIndexes(path, shard_rows=index_shard_rows)

    def close(self) -> None:
        self._con.close()

    def load(self, files: list[str]) -> LoadResult:
        """Upserts tag files keyed by (track_id, model_version), in one transaction (in parts of about
        REPLACE_ROWS tracks when the load replaces more rows than that); then brings each loaded model
        version's vector index up to date."""
        self._con.execute("SET memory_limit = ?", [self._load_memory])
        # Rows may land in any order (the upserts are keyed): DuckDB can then stream and spill instead of
        # buffering rows to keep their order (its own advice for loads larger than memory).
        self._con.execute("SET preserve_insertion_order = false")
        versions_before = {v: self._state(v) for v, in self._con.execute(
            f"SELECT DISTINCT model_version FROM {db.EMBEDDINGS}").fetchall()}
        # Read the files once; within them, the latest tagged_at of a key wins. By name: files written
        # before the `tags` column have none (without union_by_name DuckDB fails on such a mix, or, when
        # an old file comes first, drops the column from every file).
        self._con.execute(
            "CREATE OR REPLACE TEMP TABLE incoming AS SELECT * FROM read_parquet(?, union_by_name=true)", [files])
        try:
            present = {c[0] for c in self._con.execute("DESCRIBE incoming").fetchall()}
            # Columns that tag files written before them lack.
            late = [("tags", "STRUCT(label VARCHAR, score FLOAT)[]"), ("genre_source", "VARCHAR"),
                    ("model_genre", "VARCHAR"),
                    *((column, db.duckdb_type(db.DESCRIPTORS, column)) for column in db.DESCRIPTOR_VALUES),
                    ("recording_id", "VARCHAR"), ("duplicate_of", "VARCHAR"), ("health_flags", "VARCHAR[]")]
            for column, kind in late:
                if column not in present:
                    self._con.execute(f"ALTER TABLE incoming ADD COLUMN {column} {kind}")
            rows, versions, replaced = self._con.execute(
                "SELECT count(*), list(DISTINCT model_version ORDER BY model_version), "
                f"(SELECT count(*) FROM {db.TAGS} t SEMI JOIN incoming i USING (track_id, model_version)) "
                "FROM incoming").fetchone()
            parts = max(1, -(-replaced // REPLACE_ROWS))
            if parts > 1:
                _LOG.info("load: %d of the %d rows replace existing ones: committing in %d parts", replaced, rows, parts)
            updates = {}
            for part in range(parts):
                updates = self._upsert_part(part, parts, versions_before)
        finally:
            self._con.execute("DROP TABLE IF EXISTS incoming")
        self._con.execute("SET memory_limit = ?", [INDEX_READ_MEMORY])
        notes = [self._refresh_index(version, updates.get(version)) for version in versions]
        counts = {table: self._con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                  for table in db.TABLES}
        return LoadResult(files=len(files), rows=rows, model_versions=list(versions), counts=counts,
                          notes=[note for note in notes if note])

    def _upsert_part(self, part: int, parts: int, versions_before: dict[str, State]) -> dict:
        """Upserts the incoming rows of tracks whose id hashes to `part` of `parts`, in one
        transaction; returns the small updates to apply to vector indexes (none when in parts)."""
        in_part = f"hash(track_id) % {parts} = {part}"
        self._con.execute("BEGIN TRANSACTION")
        try:
            # Upserts as a DELETE of the loaded keys and a plain INSERT: DuckDB 2.0's INSERT OR REPLACE
            # (and ON CONFLICT) failed with a false "Duplicate key" when a load replaced 10^6 existing
            # embeddings under the load's memory limit (it passed with 4GB, at 4.1 GB of memory).
            self._con.execute(f"DELETE FROM {db.TRACKS} WHERE {in_part} AND track_id IN (SELECT track_id FROM incoming)")
            self._con.execute(
                f"INSERT INTO {db.TRACKS} SELECT track_id, uri, duration_s FROM incoming WHERE {in_part} "
                "QUALIFY row_number() OVER (PARTITION BY track_id ORDER BY tagged_at DESC) = 1")
            self._con.execute(
                f"CREATE OR REPLACE TEMP TABLE latest AS SELECT * FROM incoming WHERE {in_part} QUALIFY row_number() "
                "OVER (PARTITION BY track_id, model_version ORDER BY tagged_at DESC) = 1")
            for table in (db.TAGS, db.EMBEDDINGS, db.TRACK_TAGS):
                self._con.execute(f"DELETE FROM {table} x USING latest l "
                                  "WHERE x.track_id = l.track_id AND x.model_version = l.model_version")
            # A person's label outranks a model's: the reviews first, then tags rows that follow them.
            self._con.execute(f"DELETE FROM {db.REVIEWS} WHERE track_id IN "
                              f"(SELECT track_id FROM latest WHERE genre_source = 'review')")
            self._con.execute(f"INSERT INTO {db.REVIEWS} {db.REVIEWED_IN_LATEST} "
                              "QUALIFY row_number() OVER (PARTITION BY track_id ORDER BY tagged_at DESC) = 1")
            self._con.execute(f"INSERT INTO {db.TAGS} {db.TAGS_FROM_LATEST.replace('l.top_k', 'to_json(l.top_k)')}")
            # Descriptors are the audio's, whichever model tagged it: the newest loaded row that has them.
            self._con.execute(f"DELETE FROM {db.DESCRIPTORS} WHERE track_id IN "
                              f"(SELECT track_id FROM latest WHERE {db.CARRIES_DESCRIPTORS})")
            self._con.execute(f"INSERT INTO {db.DESCRIPTORS} {db.DESCRIPTORS_FROM_LATEST} "
                              "QUALIFY row_number() OVER (PARTITION BY track_id ORDER BY tagged_at DESC) = 1")
            # Copies and health, likewise the audio's.
            self._con.execute(f"DELETE FROM {db.RECORDINGS} WHERE track_id IN "
                              "(SELECT track_id FROM latest WHERE recording_id IS NOT NULL)")
            flags = "'|' || coalesce(array_to_string(health_flags, '|'), '') || '|'"
            self._con.execute(f"INSERT INTO {db.RECORDINGS} {db.recordings_from_latest(flags)} "
                              "QUALIFY row_number() OVER (PARTITION BY track_id ORDER BY tagged_at DESC) = 1")
            # A track that is silent now has nothing to be similar by, whatever an older tagging said.
            self._con.execute(
                f"INSERT INTO {db.EMBEDDINGS} SELECT track_id, model_version, embedding FROM latest "
                "WHERE genre IS NOT NULL")
            # Each loaded (track_id, model_version) gets exactly its row's tags.
            self._con.execute(
                f"INSERT INTO {db.TRACK_TAGS} SELECT track_id, model_version, t.label AS tag, max(t.score) AS score "
                "FROM (SELECT track_id, model_version, unnest(tags) AS t FROM latest) "
                "WHERE t.label IS NOT NULL AND t.score IS NOT NULL GROUP BY ALL")
            versions = [v for v, in self._con.execute("SELECT DISTINCT model_version FROM latest").fetchall()]
            updates = {} if parts > 1 else {
                version: self._loaded_embeddings(version) for version in versions
                if self._plan(version, versions_before.get(version)) == "update"}
            self._con.execute("DROP TABLE latest")
            self._con.execute("COMMIT")
        except Exception:
            self._con.execute("ROLLBACK")
            if part:
                _LOG.error("load: parts 1 to %d of %d are committed; the same command again completes the load "
                           "(its upserts are idempotent)", part, parts)
            raise
        return updates

    def _state(self, model_version: str) -> State:
        """The database's state of a model version, as its vector index records it."""
        rows, = self._con.execute(f"SELECT count(*) FROM {db.EMBEDDINGS} WHERE model_version = ?",
                                  [model_version]).fetchone()
        tagged_at, = self._con.execute(f"SELECT max(tagged_at) FROM {db.TAGS} WHERE model_version = ?",
                                       [model_version]).fetchone()
        return State(rows, tagged_at.isoformat() if tagged_at else "")

    def _plan(self, model_version: str, before: State | None) -> str:
        """Inside a load's transaction: "update" when the version has a current index (it matched the
        database before the load) and the load is small, else "build" (refresh_index decides then
        whether the version is big enough for one)."""
        if before is None or self.vector_index != "hnsw" or self._indexes.state(model_version) != before:
            return "build"
        incoming, = self._con.execute("SELECT count(*) FROM latest WHERE model_version = ?",
                                      [model_version]).fetchone()
        return "build" if incoming >= BULK_ROWS and 4 * incoming >= before.rows else "update"

    def _loaded_embeddings(self, model_version: str) -> tuple[Tracks, list[str]]:
        """A small load's rows of a model version: the tracks with an embedding, and the ids of the
        tracks now silent (their embeddings were deleted)."""
        rows = self._con.execute("SELECT track_id, embedding, genre, confidence FROM latest WHERE model_version = ? "
                                 "AND genre IS NOT NULL", [model_version]).fetchall()
        silent = [r[0] for r in self._con.execute(
            "SELECT track_id FROM latest WHERE model_version = ? AND genre IS NULL", [model_version]).fetchall()]
        tracks = Tracks([r[0] for r in rows], np.array([r[1] for r in rows], dtype=np.float32),
                        [r[2] for r in rows], np.array([r[3] for r in rows], dtype=np.float32))
        return tracks, silent

    def _refresh_index(self, model_version: str, update) -> str:
        """Builds, updates or removes a loaded model version's vector index; returns a note for the user
        ("" when there is nothing to say). A failure here leaves the loaded rows in place and the
        version searched exactly."""
        state = self._state(model_version)
        if self.vector_index != "hnsw" or state.rows < self._index_min_rows:
            self._indexes.drop(model_version)
            return ""
        try:
            if update is not None:
                self._indexes.update(model_version, *update, state)
                return ""
            size = self._indexes.build(model_version, self._embedding_batches(model_version), state)
        except Exception as err:  # the rows are committed; only the index is missing
            self._indexes.drop(model_version)
            _LOG.warning("model %s: no vector index (%s); `similar` searches it exactly", model_version, err)
            return f"model {model_version}: no vector index ({err}); `similar` searches it exactly"
        note = f"model {model_version}: HNSW vector index built over {size} embeddings"
        _LOG.info(note)
        return note

    def _embedding_batches(self, model_version: str) -> Iterator[Tracks]:
        reader = self._con.cursor().sql(
            f"""SELECT e.track_id, e.embedding, t.genre, t.confidence FROM {db.EMBEDDINGS} e
                JOIN {db.TAGS} t USING (track_id, model_version) WHERE e.model_version = ?""",
            params=[model_version]).to_arrow_reader(_BATCH_ROWS)
        for batch in reader:
            if batch.num_rows:
                flat = batch.column(1).flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
                yield Tracks(batch.column(0).to_pylist(), flat.reshape(batch.num_rows, -1),
                             batch.column(2).to_pylist(),
                             batch.column(3).to_numpy(zero_copy_only=False).astype(np.float32))

    def _vocabulary(self, model_version: str) -> list[str]:
        return [r[0] for r in self._con.execute(
            f"SELECT DISTINCT tag FROM {db.TRACK_TAGS} WHERE model_version = ?", [model_version]).fetchall()]

    def latest_model_version(self, track_id: str) -> str:
        found = self._con.execute(f"SELECT model_version FROM {db.TAGS} WHERE track_id = ? "
                                  "ORDER BY tagged_at DESC, model_version DESC LIMIT 1", [track_id]).fetchone()
        if found is None:
            raise unknown_track(track_id)
        return found[0]

    def _recordings(self, track_ids: list[str]) -> dict[str, str]:
        return dict(self._con.execute(*recordings_query(track_ids, placeholder="?")).fetchall())

    def _similar(self, track_id: str, *, k: int, model_version: str, genre: str | None = None,
                 exact: bool = False, neighbours: NeighbourFilter | None = None) -> Search:
        """The k tracks whose embeddings (from the same model) are closest by cosine similarity,
        excluding the track itself: through the model's vector index when it has a current one and
        neither exact, genre nor a descriptor filter is asked for (a filter after an index search could
        leave fewer than k), otherwise by comparing every embedding of the model."""
        if neighbours:
            neighbours.check(track_id, self._con.execute(
                f"SELECT bpm, key FROM {db.DESCRIPTORS} WHERE track_id = ?", [track_id]).fetchone())
        if not exact and genre is None and not neighbours and self.vector_index == "hnsw":
            searcher = self._indexes.open(model_version, self._state(model_version))
            vector = searcher.vector(track_id) if searcher is not None else None
            if vector is not None:
                nearest = [Neighbour(*found) for found in searcher.nearest(vector, k + 1) if found[0] != track_id]
                return Search("approximate (HNSW index)",
                              sorted(nearest, key=lambda n: (-n.similarity, n.track_id))[:k])
        if self._con.execute(f"SELECT 1 FROM {db.EMBEDDINGS} WHERE track_id = ? AND model_version = ?",
                             [track_id, model_version]).fetchone() is None:
            raise no_embedding(track_id, model_version)
        genre_filter = "AND t.genre = ?" if genre else ""
        join, condition, join_params = neighbours.join_where("e.track_id", track_id, "?") if neighbours else ("", "", [])
        rows = self._con.execute(
            f"""SELECT e.track_id, t.genre, t.confidence, list_cosine_similarity(e.embedding, q.embedding) AS similarity
                FROM {db.EMBEDDINGS} e
                JOIN {db.TAGS} t USING (track_id, model_version)
                JOIN (SELECT embedding FROM {db.EMBEDDINGS} WHERE track_id = ? AND model_version = ?) q ON TRUE
                {join}
                WHERE e.model_version = ? AND e.track_id <> ? {genre_filter} {'AND ' + condition if condition else ''}
                ORDER BY similarity DESC, e.track_id
                LIMIT ?""",
            [track_id, model_version, *join_params, model_version, track_id, *([genre] if genre else []), k]
        ).fetchall()
        return Search("exact", [Neighbour(r[0], r[1], float(r[2]), float(r[3])) for r in rows])

    def search(self, tags: list[str], *, k: int, model_version: str | None = None, match: str = "all",
               descriptors: DescriptorFilter | None = None) -> TagSearch:
        """The k tracks carrying all (or any) of the tags, by the mean score of the matched tags (ties by
        track id), from model_version or, when None, the latest model version that has those tags
        (database.pick_model_version); only those matching `descriptors`. With no tags: the k tracks
        matching `descriptors`."""
        if not tags:
            return descriptor_search(self._con.execute(*descriptor_search_query(
                descriptors or DescriptorFilter(), k=k, placeholder="?")).fetchall())
        latest = model_version is None
        if latest:
            versions = [r[0] for r in self._con.execute(
                f"""SELECT model_version FROM {db.TAGS}
                    WHERE model_version IN (SELECT DISTINCT model_version FROM {db.TRACK_TAGS})
                    GROUP BY model_version ORDER BY max(tagged_at) DESC, model_version DESC""").fetchall()]
            if not versions:
                raise no_track_tags(None)
            model_version = pick_model_version(versions, self._vocabulary, tags, match)
        vocabulary = self._vocabulary(model_version)
        if not vocabulary:
            raise no_track_tags(model_version, [r[0] for r in self._con.execute(
                f"SELECT DISTINCT model_version FROM {db.TRACK_TAGS} ORDER BY model_version").fetchall()])
        groups = resolve_tags(tags, vocabulary, model_version)
        rows = self._con.execute(*search_query(groups, match=match, k=k, model_version=model_version,
                                               placeholder="?", descriptors=descriptors)).fetchall()
        matched = self._con.execute(*matched_tags_query([r[0] for r in rows], [s for g in groups for s in g],
                                                        model_version=model_version, placeholder="?")
                                    ).fetchall() if rows else []
        described = self._con.execute(*descriptors_query([r[0] for r in rows], placeholder="?")).fetchall() \
            if rows else []
        return tag_search(rows, matched, groups=groups, model_version=model_version, latest=latest, match=match,
                          described=described)


def _connect(path: str, *, read_only: bool, timeout_s: float):
    """A DuckDB connection to the file, waiting up to timeout_s while another process holds a
    conflicting lock (DuckDB allows one writing process or several reading ones)."""
    import duckdb

    deadline = time.monotonic() + timeout_s
    waited = False
    while True:
        try:
            return duckdb.connect(path, read_only=read_only)
        except duckdb.IOException as err:
            holder = (re.search(r"Conflicting lock is held in (.+?) \(PID (\d+)\)", str(err))
                      or re.search(r"Conflicting lock is held in (\S+)()", str(err)))
            if holder is None:
                raise
            if time.monotonic() >= deadline:
                who = f"PID {holder.group(2)} ({holder.group(1)})" if holder.group(2) else holder.group(1)
                raise TimeoutError(f"--db duckdb:///{path}: in use by another process, {who}; waited "
                                   f"{timeout_s:.0f} s for it (a DuckDB file has one writer at a time)") from None
            if not waited:
                _LOG.info("%s is in use by another process (%s); waiting up to %.0f s", path,
                          holder.group(2) and f"PID {holder.group(2)}" or holder.group(1), timeout_s)
                waited = True
            time.sleep(_LOCK_POLL_S)
