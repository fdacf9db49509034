"""The recommender database behind `cattag load` and `cattag similar`: URLs and shared result types.

    duckdb:///catalogue.duckdb                 a file relative to the working directory (embedded, no server)
    duckdb:////abs/catalogue.duckdb            an absolute path (the SQLAlchemy convention: four slashes)
    postgresql://user[:password]@host:port/db  a PostgreSQL server (pgvector used when the server has it)

The tables are declared in schemas/catalogue_db.py; pipelines/duckdb_store.py and
pipelines/postgres_store.py implement the same three operations (load, latest_model_version,
similar) over them.
"""

from __future__ import annotations

import dataclasses
import urllib.parse

DUCKDB, POSTGRESQL = "duckdb", "postgresql"
VECTOR_INDEXES = ("hnsw", "none")


@dataclasses.dataclass(frozen=True)
class Neighbour:
    track_id: str
    genre: str | None
    confidence: float
    similarity: float


@dataclasses.dataclass(frozen=True)
class Search:
    """What `similar` found, and how: "exact" (every embedding of the model compared) or
    "approximate (HNSW index)" (pgvector's index: fast, may miss a true neighbour)."""
    method: str
    neighbours: list[Neighbour]


@dataclasses.dataclass(frozen=True)
class LoadResult:
    files: int
    rows: int
    model_versions: list[str]
    counts: dict[str, int]  # rows per table after the load
    notes: list[str] = dataclasses.field(default_factory=list)  # what the user should know (no pgvector, ...)


def unknown_track(track_id: str) -> ValueError:
    return ValueError(f"track {track_id!r} is not in the database")


def no_embedding(track_id: str, model_version: str) -> ValueError:
    return ValueError(f"track {track_id!r} has no embedding from model {model_version!r} (not tagged by it, or silent)")


def parse_url(url: str) -> tuple[str, str]:
    """(backend, target): ("duckdb", path) or ("postgresql", the URL as libpq takes it)."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == DUCKDB:
        path = url[len("duckdb:///"):] if url.startswith("duckdb:///") else ""
        if not path:
            raise ValueError(f"--db {url!r}: expected duckdb:///relative/path.duckdb or duckdb:////absolute/path.duckdb")
        return DUCKDB, path
    if parsed.scheme in ("postgresql", "postgres"):
        if not parsed.path.strip("/"):
            raise ValueError(f"--db {redact(url)!r}: name the database, as in postgresql://user@host:5432/catalogue")
        return POSTGRESQL, url
    raise ValueError(f"--db {redact(url)!r}: expected duckdb:///FILE or postgresql://user@host:port/database")


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parsed = urllib.parse.urlparse(url)
    if parsed.password is None:
        return url
    netloc = parsed.netloc.replace(f":{parsed.password}@", ":***@", 1)
    return urllib.parse.urlunparse(parsed._replace(netloc=netloc))


def connect(url: str, **options):
    """An open database for the URL: DuckDB or PostgreSQL. Options go to the PostgreSQL store."""
    backend, target = parse_url(url)
    if backend == DUCKDB:
        from pipelines.duckdb_store import DuckDB

        return DuckDB(target)
    from pipelines.postgres_store import PostgreSQL

    return PostgreSQL(target, **options)
