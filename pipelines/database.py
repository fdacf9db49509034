"""The recommender database behind `cattag load` and `cattag similar`.

    duckdb:///catalogue.duckdb      a file relative to the working directory (embedded, no server)
    duckdb:////abs/catalogue.duckdb an absolute path (the SQLAlchemy convention: four slashes)

The schema is in schemas/catalogue_db.py. PostgreSQL (`postgresql://...`, with pgvector) is the
production target and is not wired in yet: such a URL is refused with a clear error.
"""

from __future__ import annotations

import dataclasses
import pathlib
import urllib.parse

from schemas import catalogue_db as db

_DUCKDB = "duckdb"


@dataclasses.dataclass(frozen=True)
class Neighbour:
    track_id: str
    genre: str | None
    confidence: float
    similarity: float


@dataclasses.dataclass(frozen=True)
class LoadResult:
    files: int
    rows: int
    model_versions: list[str]
    counts: dict[str, int]  # rows per table after the load


def parse_url(url: str) -> tuple[str, str]:
    """(backend, target): ("duckdb", path) for a duckdb URL."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == _DUCKDB:
        path = url[len("duckdb:///"):] if url.startswith("duckdb:///") else ""
        if not path:
            raise ValueError(f"--db {url!r}: expected duckdb:///relative/path.duckdb or duckdb:////absolute/path.duckdb")
        return _DUCKDB, path
    if parsed.scheme in ("postgresql", "postgres"):
        raise ValueError(f"--db {url!r}: PostgreSQL is not supported by this cattag yet; use duckdb:///FILE")
    raise ValueError(f"--db {url!r}: expected a duckdb:/// URL")


class DuckDB:
    """The embedded database: a local file, opened per command."""

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
            # Read the files once; within them, the latest tagged_at of a key wins.
            self._con.execute("CREATE OR REPLACE TEMP TABLE incoming AS SELECT * FROM read_parquet(?)", [files])
            self._con.execute(
                f"INSERT OR REPLACE INTO {db.TRACKS} SELECT track_id, uri, duration_s FROM incoming "
                "QUALIFY row_number() OVER (PARTITION BY track_id ORDER BY tagged_at DESC) = 1")
            self._con.execute(
                "CREATE OR REPLACE TEMP TABLE latest AS SELECT * FROM incoming QUALIFY row_number() OVER "
                "(PARTITION BY track_id, model_version ORDER BY tagged_at DESC) = 1")
            self._con.execute(
                f"INSERT OR REPLACE INTO {db.TAGS} SELECT track_id, model_version, genre, confidence, to_json(top_k), "
                "low_confidence, review_reason, typicality, feature_version, tagged_at FROM latest")
            self._con.execute(
                f"INSERT OR REPLACE INTO {db.EMBEDDINGS} SELECT track_id, model_version, embedding FROM latest "
                "WHERE genre IS NOT NULL")
            rows, versions = self._con.execute(
                "SELECT count(*), list(DISTINCT model_version ORDER BY model_version) FROM incoming").fetchone()
            self._con.execute("DROP TABLE incoming; DROP TABLE latest")
            self._con.execute("COMMIT")
        except Exception:
            self._con.execute("ROLLBACK")
            raise
        counts = {table: self._con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                  for table in (db.TRACKS, db.TAGS, db.EMBEDDINGS)}
        return LoadResult(files=len(files), rows=rows, model_versions=list(versions), counts=counts)

    def latest_model_version(self, track_id: str) -> str:
        found = self._con.execute(f"SELECT model_version FROM {db.TAGS} WHERE track_id = ? "
                                  "ORDER BY tagged_at DESC, model_version DESC LIMIT 1", [track_id]).fetchone()
        if found is None:
            raise ValueError(f"track {track_id!r} is not in the database")
        return found[0]

    def similar(self, track_id: str, *, k: int, model_version: str, genre: str | None = None) -> list[Neighbour]:
        """The k tracks whose embeddings (from the same model) are closest by cosine similarity,
        excluding the track itself; exact search."""
        if self._con.execute(f"SELECT 1 FROM {db.EMBEDDINGS} WHERE track_id = ? AND model_version = ?",
                             [track_id, model_version]).fetchone() is None:
            raise ValueError(f"track {track_id!r} has no embedding from model {model_version!r} "
                             "(not tagged by it, or silent)")
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
        return [Neighbour(r[0], r[1], float(r[2]), float(r[3])) for r in rows]


def connect(url: str) -> DuckDB:
    backend, target = parse_url(url)
    assert backend == _DUCKDB
    return DuckDB(target)
