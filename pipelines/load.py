"""cattag load: tag Parquet files (cattag tag's output) -> the recommender database."""

from __future__ import annotations

import argparse
import glob
import logging
import pathlib

from pipelines.database import connect
from schemas import tags

_LOG = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tags", required=True, help="a `cattag tag` output directory")
    parser.add_argument("--db", required=True,
                        help="duckdb:///FILE (relative) or duckdb:////ABSOLUTE/FILE: an embedded database file")


def main(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(prog="cattag load")
    add_arguments(parser)
    args = parser.parse_args(argv)
    files = sorted(glob.glob(str(pathlib.Path(args.tags) / tags.TAGS_GLOB)))
    if not files:
        raise ValueError(f"--tags {args.tags}: no {tags.TAGS_GLOB} files (is it a `cattag tag` output?)")
    database = connect(args.db)
    try:
        result = database.load(files)
    finally:
        database.close()
    _LOG.info("load done: %d rows from %d file(s), model version(s) %s -> %s; now %s", result.rows, result.files,
              ", ".join(result.model_versions), args.db,
              ", ".join(f"{n} {table}" for table, n in result.counts.items()))
    return result
