"""cattag load: tag Parquet files (cattag tag's output) -> the recommender database."""

from __future__ import annotations

import argparse
import glob
import logging
import pathlib

from pipelines.database import POSTGRESQL, VECTOR_INDEXES, connect, parse_url, redact
from schemas import tags

_LOG = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tags", required=True, help="a `cattag tag` output directory")
    parser.add_argument("--db", required=True,
                        help="duckdb:///FILE (relative) or duckdb:////ABSOLUTE/FILE: an embedded database file; "
                             "postgresql://USER@HOST:PORT/DATABASE: a PostgreSQL server (password in the URL or "
                             "~/.pgpass; libpq's PG* environment variables apply)")
    parser.add_argument("--vector-index", choices=VECTOR_INDEXES, default="hnsw",
                        help="PostgreSQL with pgvector: an HNSW cosine index per model version (default) or none "
                             "(every search exact); DuckDB always searches exactly")


def main(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(prog="cattag load")
    add_arguments(parser)
    args = parser.parse_args(argv)
    files = sorted(glob.glob(str(pathlib.Path(args.tags) / tags.TAGS_GLOB)))
    if not files:
        raise ValueError(f"--tags {args.tags}: no {tags.TAGS_GLOB} files (is it a `cattag tag` output?)")
    backend, _ = parse_url(args.db)
    options = {"vector_index": args.vector_index} if backend == POSTGRESQL else {}
    database = connect(args.db, **options)
    try:
        result = database.load(files)
    finally:
        database.close()
    _LOG.info("load done: %d rows from %d file(s), model version(s) %s -> %s; now %s", result.rows, result.files,
              ", ".join(result.model_versions), redact(args.db),
              ", ".join(f"{n} {table}" for table, n in result.counts.items()))
    return result
