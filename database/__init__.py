"""The recommender database behind `cattag load`, `cattag similar` and `cattag search`.

    duckdb:///catalogue.duckdb                 a file relative to the working directory (embedded, no server)
    duckdb:////abs/catalogue.duckdb            an absolute path (the SQLAlchemy convention: four slashes)
    postgresql://user[:password]@host:port/db  a PostgreSQL server (pgvector used when the server has it)

    database/store.py          the Store interface, result types, errors, the tag search's SQL
    database/duckdb_store.py   the embedded default (a file; `vector_index.py`: its HNSW index files)
    database/postgres_store.py production (COPY loads, pgvector's HNSW)

connect() opens either. Imports go one way: this module -> the stores -> store.py.
"""

from __future__ import annotations

from database.store import DUCKDB, POSTGRESQL, VECTOR_INDEXES, Store, parse_url, redact

__all__ = ["DUCKDB", "POSTGRESQL", "VECTOR_INDEXES", "Store", "connect", "parse_url", "redact"]


def connect(url: str, *, read_only: bool = False, **options) -> Store:
    """An open database for the URL: DuckDB or PostgreSQL, with the store's options (vector_index, ...).
    read_only: for queries (`similar`, `search`): a DuckDB file is opened read-only, so that several
    readers can query it at once, and must exist."""
    backend, target = parse_url(url)
    if backend == DUCKDB:
        from database.duckdb_store import DuckDB

        return DuckDB(target, read_only=read_only, **options)
    from database.postgres_store import PostgreSQL

    return PostgreSQL(target, **options)
