"""The embedded recommender database: a DuckDB file, opened per command, searched exactly."""

from __future__ import annotations

import pathlib

from pipelines.database import (
    LoadResult,
    Neighbour,
    Search,
    TagSearch,
    matched_tags_query,
    no_embedding,
    no_track_tags,
    pick_model_version,
    resolve_tags,
    search_query,
    tag_search,
    unknown_track,
)
from schemas import catalogue_db as db


class DuckDB:
    def __init__(self, path: str):
        import duckdb

        pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._con = duckdb.connect(path)
        for statement in db.duckdb_ddl():
            self._con.execute(statement)

    def close(self) -> None:
        self._con.close()

    def load(self, files: list[str]) -> LoadResult:
        """Upserts tag files keyed by (track_id, model_version), in one transaction."""
        self._con.execute("BEGIN TRANSACTION")
        try:
            # Read the files once; within them, the latest tagged_at of a key wins. By name: files written
            # before the `tags` column have none (without union_by_name DuckDB fails on such a mix, or,
            # when an old file comes first, drops the column from every file).
            self._con.execute(
                "CREATE OR REPLACE TEMP TABLE incoming AS SELECT * FROM read_parquet(?, union_by_name=true)", [files])
            if "tags" not in {c[0] for c in self._con.execute("DESCRIBE incoming").fetchall()}:
                self._con.execute("ALTER TABLE incoming ADD COLUMN tags STRUCT(label VARCHAR, score FLOAT)[]")
            self._con.execute(
                f"INSERT OR REPLACE INTO {db.TRACKS} SELECT track_id, uri, duration_s FROM incoming "
                "QUALIFY row_number() OVER (PARTITION BY track_id ORDER BY tagged_at DESC) = 1")
            self._con.execute(
                "CREATE OR REPLACE TEMP TABLE latest AS SELECT * FROM incoming QUALIFY row_number() OVER "
                "(PARTITION BY track_id, model_version ORDER BY tagged_at DESC) = 1")
            self._con.execute(
                f"INSERT OR REPLACE INTO {db.TAGS} SELECT track_id, model_version, genre, confidence, to_json(top_k), "
                "low_confidence, review_reason, typicality, feature_version, tagged_at FROM latest")
            # A track that is silent now has nothing to be similar by, whatever an older tagging said.
            self._con.execute(
                f"DELETE FROM {db.EMBEDDINGS} e USING latest l WHERE e.track_id = l.track_id "
                "AND e.model_version = l.model_version AND l.genre IS NULL")
            self._con.execute(
                f"INSERT OR REPLACE INTO {db.EMBEDDINGS} SELECT track_id, model_version, embedding FROM latest "
                "WHERE genre IS NOT NULL")
            # Each loaded (track_id, model_version) gets exactly its row's tags (db.REPLACE_TRACK_TAGS).
            self._con.execute(
                "CREATE OR REPLACE TEMP TABLE new_tags AS SELECT track_id, model_version, t.label AS tag, "
                "max(t.score) AS score FROM (SELECT track_id, model_version, unnest(tags) AS t FROM latest) "
                "WHERE t.label IS NOT NULL AND t.score IS NOT NULL GROUP BY ALL")
            for statement in db.REPLACE_TRACK_TAGS:
                self._con.execute(statement)
            rows, versions = self._con.execute(
                "SELECT count(*), list(DISTINCT model_version ORDER BY model_version) FROM incoming").fetchone()
            self._con.execute("DROP TABLE incoming; DROP TABLE latest; DROP TABLE new_tags")
            self._con.execute("COMMIT")
        except Exception:
            self._con.execute("ROLLBACK")
            raise
        counts = {table: self._con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                  for table in db.TABLES}
        return LoadResult(files=len(files), rows=rows, model_versions=list(versions), counts=counts)

    def _vocabulary(self, model_version: str) -> list[str]:
        return [r[0] for r in self._con.execute(
            f"SELECT DISTINCT tag FROM {db.TRACK_TAGS} WHERE model_version = ?", [model_version]).fetchall()]

    def latest_model_version(self, track_id: str) -> str:
        found = self._con.execute(f"SELECT model_version FROM {db.TAGS} WHERE track_id = ? "
                                  "ORDER BY tagged_at DESC, model_version DESC LIMIT 1", [track_id]).fetchone()
        if found is None:
            raise unknown_track(track_id)
        return found[0]

    def similar(self, track_id: str, *, k: int, model_version: str, genre: str | None = None,
                exact: bool = True) -> Search:
        """The k tracks whose embeddings (from the same model) are closest by cosine similarity,
        excluding the track itself. Always exact here (DuckDB's vector index extension is a
        download; a scan of 100k 128-d embeddings takes under 100 ms, bench/RESULTS.md)."""
        del exact
        if self._con.execute(f"SELECT 1 FROM {db.EMBEDDINGS} WHERE track_id = ? AND model_version = ?",
                             [track_id, model_version]).fetchone() is None:
            raise no_embedding(track_id, model_version)
        genre_filter = "AND t.genre = ?" if genre else ""
        rows = self._con.execute(
            f"""SELECT e.track_id, t.genre, t.confidence, list_cosine_similarity(e.embedding, q.embedding) AS similarity
                FROM {db.EMBEDDINGS} e
                JOIN {db.TAGS} t USING (track_id, model_version)
                JOIN (SELECT embedding FROM {db.EMBEDDINGS} WHERE track_id = ? AND model_version = ?) q ON TRUE
                WHERE e.model_version = ? AND e.track_id <> ? {genre_filter}
                ORDER BY similarity DESC, e.track_id
                LIMIT ?""",
            [track_id, model_version, model_version, track_id, *([genre] if genre else []), k]).fetchall()
        return Search("exact", [Neighbour(r[0], r[1], float(r[2]), float(r[3])) for r in rows])

    def search(self, tags: list[str], *, k: int, model_version: str | None = None, match: str = "all") -> TagSearch:
        """The k tracks carrying all (or any) of the tags, by the mean score of the matched tags (ties by
        track id), from model_version or, when None, the latest model version that has those tags
        (database.pick_model_version)."""
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
                                               placeholder="?")).fetchall()
        matched = self._con.execute(*matched_tags_query([r[0] for r in rows], [s for g in groups for s in g],
                                                        model_version=model_version, placeholder="?")
                                    ).fetchall() if rows else []
        return tag_search(rows, matched, groups=groups, model_version=model_version, latest=latest, match=match)
