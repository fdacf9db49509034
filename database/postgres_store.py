"""The production recommender database: PostgreSQL, with pgvector when the server has it.

Loading stages the tag rows with COPY (one stream, not a round trip per row) into a temporary table,
then upserts the tables from it in the same transaction (a row's `tags` travel in it as JSONB, like
`top_k`, and are unnested into track_tags in SQL). With pgvector, each model version
gets a partial HNSW index for cosine distance over `embedding::vector(D)`; `similar` uses it unless
asked for an exact search or a genre filter (HNSW filters after the index scan, so a filtered query
could come back with fewer than k tracks). Without pgvector, embeddings are REAL[] and every search
is exact, computed in SQL. `search` finds a model's tag vocabulary with a loose scan of the
(tag, model_version) index (one probe per distinct tag, not a read of every track's tags).
"""

from __future__ import annotations

import io
import json
import logging

import numpy as np
import psycopg
import pyarrow.parquet as pq
from psycopg import sql

from database.store import (
    VECTOR_INDEXES,
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
    redact,
    resolve_tags,
    search_query,
    tag_search,
    unknown_track,
)
from schemas import catalogue_db as db

_LOG = logging.getLogger(__name__)

NO_PGVECTOR = ("{why}: embeddings are stored as REAL[] and `cattag similar` compares every embedding of a "
               "model (exact, slower on large catalogues); install pgvector (https://github.com/pgvector/pgvector) "
               "and load into a new database for an HNSW index")
# hnsw.ef_search bounds how many rows an index scan returns and how far it looks: pgvector's default,
# 40, found 93% of the true 10 nearest among 100k tracks, 100 found 98% at 1 ms more (bench/RESULTS.md).
_EF_SEARCH_MIN, _EF_SEARCH_MAX = 100, 1000
# An HNSW build is twice as fast when its graph fits in maintenance_work_mem (35 s instead of 71 s for
# 100k 128-d embeddings; the server default is 64 MB): load raises it for its own transaction, to at
# most this, from about 1.1 kB a 128-d element measured by pgvector's build notices.
_INDEX_BUILD_MEMORY_MAX_MB = 1024
BULK_ROWS = 10_000  # a load of at least this many rows of a model version (and a quarter of what it holds) rebuilds its index
_STAGED_COLUMNS = ("track_id", "uri", "duration_s", "genre", "confidence", "top_k", "low_confidence",
                   "review_reason", "typicality", "model_version", "feature_version", "tagged_at", "embedding", "tags",
                   "genre_source", "model_genre", *db.DESCRIPTOR_VALUES, "recording_id", "duplicate_of", "health_flags")
# Tag files written before these columns existed have none: staged as NULL.
_OPTIONAL_COLUMNS = {"tags", "genre_source", "model_genre", *db.DESCRIPTOR_VALUES, "recording_id", "duplicate_of",
                     "health_flags"}


class PostgreSQL(LeavesOutCopies):
    def __init__(self, url: str, *, vector_index: str = "hnsw", pgvector: bool | None = None):
        """pgvector=None: use it when the server has it; False: store REAL[] even if it does."""
        if vector_index not in VECTOR_INDEXES:
            raise ValueError(f"vector index {vector_index!r}: expected one of {', '.join(VECTOR_INDEXES)}")
        try:
            self._con = psycopg.connect(url, connect_timeout=10)
        except psycopg.OperationalError as err:
            raise ConnectionError(f"--db {redact(url)}: cannot connect to PostgreSQL: {str(err).strip()}") from None
        self.vector_index = vector_index
        self.notes: list[str] = []
        self._why_no_pgvector = ""
        self.pgvector = self._set_up(pgvector)

    def close(self) -> None:
        self._con.close()

    def _set_up(self, wanted: bool | None) -> bool:
        """Creates the tables if needed; returns whether embeddings are pgvector vectors."""
        with self._con.transaction():
            existing = self._con.execute(
                "SELECT udt_name FROM information_schema.columns WHERE table_schema = current_schema() "
                "AND table_name = %s AND column_name = 'embedding'", [db.EMBEDDINGS]).fetchone()
            if existing is not None:
                pgvector = existing[0] == "vector"
                self._why_no_pgvector = f"this database's {db.EMBEDDINGS} table was created without pgvector"
                if wanted is not None and wanted != pgvector:
                    raise ValueError(f"table {db.EMBEDDINGS} already stores embeddings as {existing[0]}")
            else:
                pgvector = self._enable_pgvector() if wanted is not False else False
            for statement in db.postgres_ddl(pgvector=pgvector):
                self._con.execute(statement)
        if not pgvector and wanted is None:
            self.notes.append(NO_PGVECTOR.format(why=self._why_no_pgvector))
            _LOG.warning(self.notes[-1])
        return pgvector

    def _enable_pgvector(self) -> bool:
        if self._con.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'").fetchone() is None:
            self._why_no_pgvector = "the server has no pgvector extension"
            return False
        try:
            with self._con.transaction():  # a savepoint: a refusal must not abort the set-up
                self._con.execute("CREATE EXTENSION IF NOT EXISTS vector")
        except psycopg.Error as err:  # InsufficientPrivilege, mostly
            self._why_no_pgvector = f"pgvector is not enabled here and this user cannot enable it ({str(err).strip()})"
            return False
        return True

    def load(self, files: list[str]) -> LoadResult:
        """Upserts tag files keyed by (track_id, model_version), in one transaction."""
        with self._con.transaction():
            self._con.execute(
                "CREATE TEMP TABLE incoming (track_id TEXT, uri TEXT, duration_s DOUBLE PRECISION, genre TEXT, "
                "confidence REAL, top_k JSONB, low_confidence BOOLEAN, review_reason TEXT, typicality REAL, "
                "model_version TEXT, feature_version TEXT, tagged_at TIMESTAMPTZ, embedding REAL[], tags JSONB, "
                "genre_source TEXT, model_genre TEXT, "
                + ", ".join(f"{c} {db.postgres_type(db.DESCRIPTORS, c)}" for c in db.DESCRIPTOR_VALUES)
                + ", recording_id TEXT, duplicate_of TEXT, health_flags TEXT) ON COMMIT DROP")
            with self._con.cursor().copy(f"COPY incoming ({', '.join(_STAGED_COLUMNS)}) FROM STDIN") as copy:
                for path in files:
                    for record in _staged_rows(path):
                        copy.write_row(record)
            self._con.execute(
                f"""INSERT INTO {db.TRACKS} SELECT DISTINCT ON (track_id) track_id, uri, duration_s FROM incoming
                    ORDER BY track_id, tagged_at DESC
                    ON CONFLICT (track_id) DO UPDATE SET uri = EXCLUDED.uri, duration_s = EXCLUDED.duration_s""")
            self._con.execute(
                "CREATE TEMP TABLE latest ON COMMIT DROP AS SELECT DISTINCT ON (track_id, model_version) * "
                "FROM incoming ORDER BY track_id, model_version, tagged_at DESC")
            # A person's label outranks a model's: the reviews first, then tags rows that follow them.
            self._con.execute(
                f"""INSERT INTO {db.REVIEWS} SELECT DISTINCT ON (track_id) * FROM ({db.REVIEWED_IN_LATEST}) reviewed
                    ORDER BY track_id, tagged_at DESC
                    ON CONFLICT (track_id) DO UPDATE SET genre = EXCLUDED.genre, model_genre = EXCLUDED.model_genre,
                        model_version = EXCLUDED.model_version, tagged_at = EXCLUDED.tagged_at""")
            self._con.execute(
                f"""INSERT INTO {db.TAGS} {db.TAGS_FROM_LATEST}
                    ON CONFLICT (track_id, model_version) DO UPDATE SET genre = EXCLUDED.genre,
                        confidence = EXCLUDED.confidence, top_k = EXCLUDED.top_k,
                        low_confidence = EXCLUDED.low_confidence, review_reason = EXCLUDED.review_reason,
                        typicality = EXCLUDED.typicality, feature_version = EXCLUDED.feature_version,
                        tagged_at = EXCLUDED.tagged_at, genre_source = EXCLUDED.genre_source,
                        model_genre = EXCLUDED.model_genre""")
            # Descriptors are the audio's, whichever model tagged it: the newest loaded row that has them.
            self._con.execute(
                f"""INSERT INTO {db.DESCRIPTORS} SELECT DISTINCT ON (track_id) * FROM ({db.DESCRIPTORS_FROM_LATEST}) d
                    ORDER BY track_id, described_at DESC
                    ON CONFLICT (track_id) DO UPDATE SET """
                + ", ".join(f"{c} = EXCLUDED.{c}" for c in (*db.DESCRIPTOR_VALUES, "described_at")))
            self._con.execute(
                f"""INSERT INTO {db.RECORDINGS} SELECT DISTINCT ON (track_id) * FROM
                    ({db.recordings_from_latest("health_flags")}) r ORDER BY track_id, checked_at DESC
                    ON CONFLICT (track_id) DO UPDATE SET recording_id = EXCLUDED.recording_id,
                        duplicate_of = EXCLUDED.duplicate_of, health_flags = EXCLUDED.health_flags,
                        checked_at = EXCLUDED.checked_at""")
            self._con.execute(
                f"DELETE FROM {db.EMBEDDINGS} e USING latest l WHERE e.track_id = l.track_id "
                "AND e.model_version = l.model_version AND l.genre IS NULL")
            if self.pgvector and self.vector_index == "hnsw":
                self._drop_indexes_for_bulk()
            self._con.execute(
                f"""INSERT INTO {db.EMBEDDINGS} SELECT track_id, model_version,
                        embedding{'::vector' if self.pgvector else ''} FROM latest WHERE genre IS NOT NULL
                    ON CONFLICT (track_id, model_version) DO UPDATE SET embedding = EXCLUDED.embedding""")
            # Each loaded (track_id, model_version) gets exactly its row's tags (db.REPLACE_TRACK_TAGS).
            self._con.execute(
                "CREATE TEMP TABLE new_tags ON COMMIT DROP AS SELECT l.track_id, l.model_version, t.label AS tag, "
                "max(t.score) AS score FROM latest l, jsonb_to_recordset(l.tags) AS t(label TEXT, score REAL) "
                "WHERE t.label IS NOT NULL AND t.score IS NOT NULL GROUP BY 1, 2, 3")
            self._con.execute("ANALYZE new_tags")
            for statement in db.REPLACE_TRACK_TAGS:
                self._con.execute(statement)
            rows, = self._con.execute("SELECT count(*) FROM incoming").fetchone()
            dims = self._con.execute(
                "SELECT model_version, max(cardinality(embedding)) FROM latest GROUP BY model_version "
                "ORDER BY model_version").fetchall()
            if self.pgvector and self.vector_index == "hnsw":
                for version, dim in dims:
                    if dim:  # a model version whose tracks were all silent has nothing to index
                        self._create_index(version, int(dim))
            # Fresh statistics, or the planner, guessing a near-empty table, scans it instead of the index.
            self._con.execute(f"ANALYZE {db.TRACKS}, {db.TAGS}, {db.EMBEDDINGS}, {db.TRACK_TAGS}, {db.DESCRIPTORS}, "
                              f"{db.RECORDINGS}")
        counts = {table: self._con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                  for table in db.TABLES}
        self._con.commit()
        return LoadResult(files=len(files), rows=rows, model_versions=[v for v, _ in dims], counts=counts,
                          notes=list(self.notes))

    def _drop_indexes_for_bulk(self) -> None:
        """A load that brings a model version at least BULK_ROWS rows and a quarter of what it holds drops
        that version's index, which _create_index builds again after the insert: inserting into an HNSW
        index is row by row, building one over the rows at once is far cheaper. Smaller loads update it."""
        sizes = self._con.execute(
            f"""SELECT l.model_version, count(*), (SELECT count(*) FROM {db.EMBEDDINGS} e
                    WHERE e.model_version = l.model_version)
                FROM latest l WHERE l.genre IS NOT NULL GROUP BY l.model_version""").fetchall()
        for version, incoming, held in sizes:
            if incoming >= BULK_ROWS and 4 * incoming >= held and self.has_index(version):
                self._con.execute(sql.SQL("DROP INDEX {name}").format(name=sql.Identifier(db.hnsw_index_name(version))))
                self.notes.append(f"{incoming} rows of {version} loaded at once: its HNSW index was rebuilt after them")
                _LOG.info(self.notes[-1])

    def _create_index(self, version: str, dim: int) -> None:
        """The model version's partial HNSW index, built after the rows are in (a first load, or a bulk one
        that dropped it); loads too small for a rebuild update it row by row."""
        if self.has_index(version):
            return
        rows, = self._con.execute(f"SELECT count(*) FROM {db.EMBEDDINGS} WHERE model_version = %s",
                                  [version]).fetchone()
        needed_mb = min(_INDEX_BUILD_MEMORY_MAX_MB, int(rows * (4 * dim + 600) * 1.5 / 2**20) + 1)
        current_mb, = self._con.execute(
            "SELECT setting::bigint / 1024 FROM pg_settings WHERE name = 'maintenance_work_mem'").fetchone()
        if needed_mb > current_mb:
            self._con.execute(sql.SQL("SET LOCAL maintenance_work_mem = {}").format(sql.Literal(f"{needed_mb}MB")))
        self._con.execute(sql.SQL(
            "CREATE INDEX {name} ON {table} USING hnsw ((embedding::vector({dim})) vector_cosine_ops) "
            "WHERE model_version = {version}").format(
                name=sql.Identifier(db.hnsw_index_name(version)), table=sql.Identifier(db.EMBEDDINGS),
                dim=sql.Literal(dim), version=sql.Literal(version)))

    def latest_model_version(self, track_id: str) -> str:
        found = self._con.execute(f"SELECT model_version FROM {db.TAGS} WHERE track_id = %s "
                                  "ORDER BY tagged_at DESC, model_version DESC LIMIT 1", [track_id]).fetchone()
        self._con.rollback()  # end the read's transaction
        if found is None:
            raise unknown_track(track_id)
        return found[0]

    def has_index(self, model_version: str) -> bool:
        found = self._con.execute("SELECT 1 FROM pg_indexes WHERE tablename = %s AND indexname = %s",
                                  [db.EMBEDDINGS, db.hnsw_index_name(model_version)]).fetchone()
        return found is not None

    def _recordings(self, track_ids: list[str]) -> dict[str, str]:
        try:
            return dict(self._con.execute(*recordings_query(track_ids, placeholder="%s")).fetchall())
        finally:
            self._con.rollback()

    def _similar(self, track_id: str, *, k: int, model_version: str, genre: str | None = None,
                 exact: bool = False, neighbours: NeighbourFilter | None = None) -> Search:
        """The k tracks whose embeddings (from the same model) are closest by cosine similarity,
        excluding the track itself: through the model's HNSW index when there is one and neither
        exact, genre nor a descriptor filter is asked for, otherwise by comparing every embedding of
        the model."""
        try:
            with self._con.transaction():
                found = self._con.execute(f"SELECT embedding FROM {db.EMBEDDINGS} WHERE track_id = %s "
                                          "AND model_version = %s", [track_id, model_version]).fetchone()
                if found is None:
                    raise no_embedding(track_id, model_version)
                if neighbours:
                    neighbours.check(track_id, self._con.execute(
                        f"SELECT bpm, key FROM {db.DESCRIPTORS} WHERE track_id = %s", [track_id]).fetchone())
                if not self.pgvector:
                    return Search("exact", self._exact_arrays(found[0], track_id, k, model_version, genre, neighbours))
                query = _parse_vector(found[0])
                if not exact and genre is None and not neighbours and self.has_index(model_version):
                    return Search("approximate (HNSW index)", self._nearest(query, track_id, k, model_version))
                self._con.execute("SET LOCAL enable_indexscan = off")  # exact: read every embedding
                return Search("exact", self._nearest(query, track_id, k, model_version, genre, exact=True,
                                                     neighbours=neighbours))
        finally:
            self._con.rollback()

    def search(self, tags: list[str], *, k: int, model_version: str | None = None, match: str = "all",
               descriptors: DescriptorFilter | None = None) -> TagSearch:
        """The k tracks carrying all (or any) of the tags, by the mean score of the matched tags (ties by
        track id), from model_version or, when None, the latest model version that has those tags
        (database.pick_model_version); only those matching `descriptors`. With no tags: the k tracks
        matching `descriptors`."""
        try:
            with self._con.transaction():
                if not tags:
                    return descriptor_search(self._con.execute(*descriptor_search_query(
                        descriptors or DescriptorFilter(), k=k, placeholder="%s",
                        by_id='d.track_id COLLATE "C"')).fetchall())
                every_tag = self._distinct_tags()
                latest = model_version is None

                def vocabulary_of(version: str) -> list[str]:
                    return [r[0] for r in self._con.execute(
                        f"""SELECT u.tag FROM unnest(%s::text[]) AS u(tag) WHERE EXISTS (
                                SELECT 1 FROM {db.TRACK_TAGS} x WHERE x.tag = u.tag AND x.model_version = %s)""",
                        [every_tag, version]).fetchall()]

                if latest:
                    versions = [r[0] for r in self._con.execute(
                        f"""SELECT model_version FROM {db.TAGS} GROUP BY model_version
                            HAVING EXISTS (SELECT 1 FROM {db.TRACK_TAGS} x
                                WHERE x.model_version = {db.TAGS}.model_version AND x.tag = ANY(%s))
                            ORDER BY max(tagged_at) DESC, model_version COLLATE "C" DESC""",
                        [every_tag]).fetchall()]
                    if not versions:
                        raise no_track_tags(None)
                    model_version = pick_model_version(versions, vocabulary_of, tags, match)
                vocabulary = vocabulary_of(model_version)
                if not vocabulary:
                    raise no_track_tags(model_version, sorted(r[0] for r in self._con.execute(
                        f"SELECT DISTINCT model_version FROM {db.TRACK_TAGS}").fetchall()))
                groups = resolve_tags(tags, vocabulary, model_version)
                rows = self._con.execute(*search_query(groups, match=match, k=k, model_version=model_version,
                                                       placeholder="%s", by_id='m.track_id COLLATE "C"',
                                                       descriptors=descriptors)).fetchall()
                matched = self._con.execute(*matched_tags_query(
                    [r[0] for r in rows], [s for g in groups for s in g], model_version=model_version,
                    placeholder="%s")).fetchall() if rows else []
                described = self._con.execute(*descriptors_query([r[0] for r in rows], placeholder="%s")
                                              ).fetchall() if rows else []
                return tag_search(rows, matched, groups=groups, model_version=model_version, latest=latest,
                                  match=match, described=described)
        finally:
            self._con.rollback()

    def _distinct_tags(self) -> list[str]:
        """Every tag in track_tags, by a loose scan of the (tag, model_version) index: one probe for
        the next tag after each, instead of reading every row."""
        return [r[0] for r in self._con.execute(
            f"""WITH RECURSIVE vocabulary(tag) AS (
                    SELECT min(tag) FROM {db.TRACK_TAGS}
                    UNION ALL
                    SELECT (SELECT min(x.tag) FROM {db.TRACK_TAGS} x WHERE x.tag > v.tag)
                    FROM vocabulary v WHERE v.tag IS NOT NULL)
                SELECT tag FROM vocabulary WHERE tag IS NOT NULL""").fetchall()]

    def _nearest(self, query: list[float], track_id: str, k: int, model_version: str,
                 genre: str | None = None, exact: bool = False,
                 neighbours: NeighbourFilter | None = None) -> list[Neighbour]:
        """pgvector's `<=>` (cosine distance) over embedding::vector(D): the expression the partial
        HNSW index is built on, with the model version as a literal so the planner can match the
        index's predicate."""
        self._con.execute(sql.SQL("SET LOCAL hnsw.ef_search = {}").format(
            sql.Literal(min(max(_EF_SEARCH_MIN, k + 1), _EF_SEARCH_MAX))))
        distance = sql.SQL("e.embedding::vector({dim}) <=> {query}::vector({dim})").format(
            dim=sql.Literal(len(query)), query=sql.Literal(_vector_text(query)))
        join, condition, join_params = (neighbours.join_where("e.track_id", track_id, "%s") if neighbours
                                        else ("", "", []))
        rows = self._con.execute(sql.SQL(
            """SELECT n.track_id, t.genre, t.confidence, 1 - n.distance AS similarity FROM (
                   SELECT e.track_id, {distance} AS distance FROM {embeddings} e {genre_join} {descriptor_join}
                   WHERE e.model_version = {version} {genre_filter} {descriptor_filter}
                   ORDER BY {distance}{tie_break} LIMIT {limit}) n
               JOIN {tags} t ON t.track_id = n.track_id AND t.model_version = {version}
               WHERE n.track_id <> {track} ORDER BY n.distance, n.track_id LIMIT {k}""").format(
            distance=distance, embeddings=sql.Identifier(db.EMBEDDINGS), tags=sql.Identifier(db.TAGS),
            genre_join=sql.SQL(f"JOIN {db.TAGS} g USING (track_id, model_version)" if genre else ""),
            genre_filter=sql.SQL("AND g.genre = {}").format(sql.Literal(genre)) if genre else sql.SQL(""),
            # Ties broken by id as DuckDB does; an index scan can only order by the distance itself.
            tie_break=sql.SQL(", e.track_id" if exact else ""),
            version=sql.Literal(model_version), limit=sql.Literal(k + 1), track=sql.Literal(track_id),
            descriptor_join=sql.SQL(join), descriptor_filter=sql.SQL("AND " + condition if condition else ""),
            k=sql.Literal(k)), join_params).fetchall()
        return [Neighbour(r[0], r[1], float(r[2]), float(r[3])) for r in rows]

    def _exact_arrays(self, query: list[float], track_id: str, k: int, model_version: str,
                      genre: str | None, neighbours: NeighbourFilter | None = None) -> list[Neighbour]:
        genre_filter = "AND t.genre = %s" if genre else ""
        join, condition, join_params = (neighbours.join_where("e.track_id", track_id, "%s") if neighbours
                                        else ("", "", []))
        rows = self._con.execute(
            f"""SELECT e.track_id, t.genre, t.confidence,
                    (SELECT sum(a::float8 * b) / sqrt(sum(a::float8 * a) * sum(b::float8 * b))
                     FROM unnest(e.embedding, %s::real[]) AS u(a, b)) AS similarity
                FROM {db.EMBEDDINGS} e JOIN {db.TAGS} t USING (track_id, model_version) {join}
                WHERE e.model_version = %s AND e.track_id <> %s {genre_filter} {'AND ' + condition if condition else ''}
                ORDER BY similarity DESC, e.track_id LIMIT %s""",
            [list(query), *join_params, model_version, track_id, *([genre] if genre else []), k]).fetchall()
        return [Neighbour(r[0], r[1], float(r[2]), float(r[3])) for r in rows]


def _staged_rows(path: str, batch_rows: int = 20_000):
    """The Parquet rows of one tag file as COPY tuples (columns as in _STAGED_COLUMNS), read
    `batch_rows` at a time: a file of a million rows costs the memory of one batch, not of the file."""
    parquet = pq.ParquetFile(path)
    present = set(parquet.schema_arrow.names)
    wanted = [c for c in _STAGED_COLUMNS if c in present or c not in _OPTIONAL_COLUMNS]
    for batch in parquet.iter_batches(batch_size=batch_rows, columns=wanted):
        columns = {name: batch.column(name).to_pylist() if name in batch.schema.names else [None] * batch.num_rows
                   for name in _STAGED_COLUMNS if name != "embedding"}
        for name in ("top_k", "tags"):
            columns[name] = [None if t is None else json.dumps(t) for t in columns[name]]
        # "|clipping|gap|", as DuckDB writes them (schemas/catalogue_db.py: one LIKE finds a flag).
        columns["health_flags"] = [None if f is None else "|" + "|".join(f) + "|" for f in columns["health_flags"]]
        columns["embedding"] = _array_literals(batch.column("embedding"))
        yield from zip(*(columns[name] for name in _STAGED_COLUMNS))


def _array_literals(embeddings) -> list[str]:
    """PostgreSQL array literals "{0.1,0.2,...}", formatted by numpy a matrix at a time: psycopg's
    list dumper formats element by element in Python and took 70% of a load. %.9g round-trips float32."""
    fixed = embeddings.combine_chunks() if hasattr(embeddings, "combine_chunks") else embeddings
    matrix = fixed.flatten().to_numpy(zero_copy_only=False).reshape(len(fixed), fixed.type.list_size)
    if not len(matrix):
        return []
    buffer = io.StringIO()
    np.savetxt(buffer, matrix, fmt="%.9g", delimiter=",")
    return ["{" + line + "}" for line in buffer.getvalue().splitlines()]


def _vector_text(values) -> str:
    return "[" + ",".join(repr(float(v)) for v in values) + "]"


def _parse_vector(text: str) -> list[float]:
    """pgvector's text form "[1,2,3]" (psycopg returns it as text without pgvector's Python adapter)."""
    return [float(v) for v in text.strip("[]").split(",")]
