"""The recommender database's schema: what `cattag load` writes and `cattag similar` reads.

    tracks      one row per track id: where it is and how long it lasts (the latest load wins)
    tags        one row per (track_id, model_version): genre, confidence, top-k, review flag
    embeddings  one row per (track_id, model_version): the unit-length track embedding

Keyed by (track_id, model_version), so loading the same tags twice changes nothing and a newer
model's tags sit beside the older ones, each queryable by its version. A silent track (no genre,
zero embedding) has a tags row but no embeddings row: it has nothing to be similar by.

The same tables exist in DuckDB (the embedded default) and PostgreSQL (production). In PostgreSQL
with pgvector the embedding is a `vector`; each model version gets its own partial HNSW index over
`embedding::vector(D)` (D: that model's embedding size), so models of different sizes share the table
and every index has the fixed dimension pgvector needs. Without pgvector it is a `real[]`.
"""

from __future__ import annotations

import hashlib

TRACKS, TAGS, EMBEDDINGS = "tracks", "tags", "embeddings"
TABLES = (TRACKS, TAGS, EMBEDDINGS)


def duckdb_ddl() -> list[str]:
    """CREATE statements for DuckDB. Embeddings are FLOAT lists, not fixed-size arrays: models
    with different embedding sizes share the table."""
    return [
        f"""CREATE TABLE IF NOT EXISTS {TRACKS} (
            track_id VARCHAR PRIMARY KEY,
            uri VARCHAR NOT NULL,
            duration_s DOUBLE NOT NULL)""",
        f"""CREATE TABLE IF NOT EXISTS {TAGS} (
            track_id VARCHAR NOT NULL,
            model_version VARCHAR NOT NULL,
            genre VARCHAR,
            confidence REAL NOT NULL,
            top_k JSON,
            low_confidence BOOLEAN NOT NULL,
            review_reason VARCHAR,
            typicality REAL,
            feature_version VARCHAR NOT NULL,
            tagged_at TIMESTAMPTZ NOT NULL,
            PRIMARY KEY (track_id, model_version))""",
        f"""CREATE TABLE IF NOT EXISTS {EMBEDDINGS} (
            track_id VARCHAR NOT NULL,
            model_version VARCHAR NOT NULL,
            embedding FLOAT[] NOT NULL,  -- unit length; its size is the model's embedding size
            PRIMARY KEY (track_id, model_version))""",
    ]


def postgres_ddl(*, pgvector: bool) -> list[str]:
    """CREATE statements for PostgreSQL: the same columns as duckdb_ddl(), in PostgreSQL types."""
    return [
        f"""CREATE TABLE IF NOT EXISTS {TRACKS} (
            track_id TEXT PRIMARY KEY,
            uri TEXT NOT NULL,
            duration_s DOUBLE PRECISION NOT NULL)""",
        f"""CREATE TABLE IF NOT EXISTS {TAGS} (
            track_id TEXT NOT NULL,
            model_version TEXT NOT NULL,
            genre TEXT,
            confidence REAL NOT NULL,
            top_k JSONB,
            low_confidence BOOLEAN NOT NULL,
            review_reason TEXT,
            typicality REAL,
            feature_version TEXT NOT NULL,
            tagged_at TIMESTAMPTZ NOT NULL,
            PRIMARY KEY (track_id, model_version))""",
        f"""CREATE TABLE IF NOT EXISTS {EMBEDDINGS} (
            track_id TEXT NOT NULL,
            model_version TEXT NOT NULL,
            embedding {"vector" if pgvector else "REAL[]"} NOT NULL,
            PRIMARY KEY (track_id, model_version))""",
    ]


def hnsw_index_name(model_version: str) -> str:
    """A stable, valid identifier for one model version's vector index (versions are free text)."""
    return f"{EMBEDDINGS}_hnsw_{hashlib.sha256(model_version.encode()).hexdigest()[:16]}"
