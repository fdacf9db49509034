"""cattag review: a tag output -> the review sheet, the tracks most worth a person's look first.

    cattag review --tags OUT --output review.csv [--limit N] [--model-version V]

The latest row of each track (of one model version: the newest unless --model-version) is a
candidate, except tracks a person already labelled (genre_source "review"; they steer the pick
away from music already covered) and silent ones (nothing to learn from). transforms/review_selection.py
orders them; schemas/review_sheet.py is the sheet. Then: fill `corrected_label`, and
`cattag train --data FEAT --model-dir M2 --add-labels review.csv`.
"""

from __future__ import annotations

import argparse
import logging

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from schemas import review_sheet
from schemas import tags as tags_schema
from schemas.tag_output import TAGS_GLOB, TagOutput, read_tables
from transforms import review_selection

_LOG = logging.getLogger(__name__)
DEFAULT_LIMIT = 50
_COLUMNS = ["track_id", "uri", "genre", "confidence", "review_reason", "top_k", "typicality", "embedding",
            "model_version", "tagged_at"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tags", required=True, help="a `cattag tag` output directory")
    parser.add_argument("--output", required=True, help="the review sheet to write (CSV)")
    parser.add_argument("--limit", type=int, default=DEFAULT_LIMIT,
                        help="at most this many tracks (default %(default)s)")
    parser.add_argument("--model-version", default=None,
                        help="review this model version's tags (default: the newest in the output)")


def read_version(files: list[str], model_version: str | None) -> pa.Table:
    """The rows of one model version (the newest tagged by default), one per track (its newest), from
    tag files that may hold several versions with embeddings of different sizes."""
    by_version: dict[str, list[str]] = {}
    newest: dict[str, object] = {}
    for path in files:
        table = read_tables([path], ["model_version", "tagged_at"])
        for version in set(table.column("model_version").to_pylist()):
            by_version.setdefault(version, []).append(path)
            newest[version] = max(filter(None, [newest.get(version), pc.max(table["tagged_at"]).as_py()]))
    if model_version is None:
        model_version = max(newest, key=lambda version: newest[version])
    if model_version not in by_version:
        raise ValueError(f"--model-version {model_version}: no rows of that version in the tag output "
                         f"(it holds {', '.join(sorted(by_version))})")
    tables = []
    for path in by_version[model_version]:
        with FileSystems.open(path) as handle:
            available = set(pq.read_schema(handle).names)
        table = read_tables([path], [c for c in [*_COLUMNS, tags_schema.GENRE_SOURCE] if c in available])
        if tags_schema.GENRE_SOURCE not in table.column_names:  # written before cattag recorded it
            table = table.append_column(tags_schema.GENRE_SOURCE, pa.nulls(table.num_rows, pa.string()))
        tables.append(table.filter(pc.equal(table["model_version"], model_version)))
    table = pa.concat_tables(tables, promote_options="default")
    table = table.sort_by([("track_id", "ascending"), ("tagged_at", "descending")])
    track_ids = table.column("track_id").to_pylist()
    first = [i for i, track in enumerate(track_ids) if i == 0 or track_ids[i - 1] != track]
    return table.take(pa.array(first, pa.int64()))


def sheet_rows(table: pa.Table, limit: int) -> list[dict]:
    """The sheet's rows, in the order review_selection picks them."""
    rows = table.to_pylist()
    reviewed = [r for r in rows if r.get(tags_schema.GENRE_SOURCE) == tags_schema.BY_REVIEW]
    candidates = [r for r in rows if r.get(tags_schema.GENRE_SOURCE) != tags_schema.BY_REVIEW and r["genre"] is not None]
    if not candidates:
        return []
    picked = review_selection.pick(
        np.array([r["confidence"] for r in candidates]), np.array([r["embedding"] for r in candidates]), limit,
        np.array([r["embedding"] for r in reviewed]) if reviewed else None)
    return [{
        "track_id": candidates[i]["track_id"],
        "uri": candidates[i]["uri"],
        "genre": candidates[i]["genre"],
        "confidence": f"{candidates[i]['confidence']:.3f}",
        "review_reason": candidates[i]["review_reason"] or "",
        "top_k": "; ".join(f"{entry['label']} {entry['score']:.2f}" for entry in candidates[i]["top_k"] or []),
        "typicality": "" if candidates[i]["typicality"] is None else f"{candidates[i]['typicality']:.3f}",
        "picked_for": why,
    } for i, why in picked]


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="cattag review")
    add_arguments(parser)
    args = parser.parse_args(argv)
    if args.limit < 1:
        raise ValueError(f"--limit {args.limit}: expected at least 1")
    output = TagOutput(args.tags)
    files = output.tag_files()
    if not files:
        raise ValueError(f"--tags {args.tags}: no {TAGS_GLOB} files (is it a `cattag tag` output?)")
    rows = sheet_rows(read_version(files, args.model_version), args.limit)
    review_sheet.write(args.output, rows)
    flagged = sum(1 for r in rows if r["review_reason"])
    _LOG.info("review: %d tracks written to %s (%d of them flagged); fill corrected_label, then "
              "`cattag train --data FEAT --model-dir NEW --add-labels %s`", len(rows), args.output, flagged, args.output)
    print(f"{len(rows)} tracks to review in {args.output} ({flagged} flagged for review, the rest picked for what "
          f"they would teach the model); fill corrected_label, then run "
          f"`cattag train --data FEAT --model-dir NEW --add-labels {args.output}`")
    return rows
