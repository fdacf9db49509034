"""cattag load: tag Parquet files (cattag tag's output) -> the recommender database."""

from __future__ import annotations

import argparse
import logging
import re

from database import DUCKDB, VECTOR_INDEXES, connect, parse_url, redact
from database.duckdb_store import LOAD_MEMORY
from schemas.tag_output import TAGS_GLOB, TagOutput

_LOG = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tags", required=True, help="a `cattag tag` output directory")
    parser.add_argument("--db", required=True,
                        help="duckdb:///FILE (relative) or duckdb:////ABSOLUTE/FILE: an embedded database file; "
                             "postgresql://USER@HOST:PORT/DATABASE: a PostgreSQL server (password in the URL or "
                             "~/.pgpass; libpq's PG* environment variables apply)")
    parser.add_argument("--vector-index", choices=VECTOR_INDEXES, default="hnsw",
                        help="hnsw (default): an HNSW cosine index per model version, which `cattag similar` "
                             "searches (PostgreSQL: pgvector's, built after the rows; DuckDB: files beside the "
                             "database, for model versions of 30000 embeddings or more); none: every search exact")


    parser.add_argument("--duckdb-memory", default=LOAD_MEMORY, metavar="SIZE",
                        help="DuckDB: memory the load may hold before it spills to a folder beside the database "
                             "file (default %(default)s; DuckDB's own default is 80%% of the machine's)")


def main(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(prog="cattag load")
    add_arguments(parser)
    args = parser.parse_args(argv)
    files = TagOutput(args.tags).tag_files()  # on any Beam filesystem, as every other reader lists it
    if not files:
        raise ValueError(f"--tags {args.tags}: no {TAGS_GLOB} files (is it a `cattag tag` output?)")
    if not re.fullmatch(r"\d+(\.\d+)?\s*[KMGT]i?B", args.duckdb_memory, re.IGNORECASE):
        raise ValueError(f"--duckdb-memory {args.duckdb_memory!r}: expected a size such as 512MB or 2GB")
    backend, _ = parse_url(args.db)
    options = {"load_memory": args.duckdb_memory} if backend == DUCKDB else {}
    with connect(args.db, vector_index=args.vector_index, **options) as database:
        result = database.load(files)
    _LOG.info("load done: %d rows from %d file(s), model version(s) %s -> %s; now %s", result.rows, result.files,
              ", ".join(result.model_versions), redact(args.db),
              ", ".join(f"{n} {table}" for table, n in result.counts.items()))
    return result
