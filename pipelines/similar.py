"""cattag similar: the tracks nearest to one track by embedding, from the recommender database."""

from __future__ import annotations

import argparse
import dataclasses
import json

from database import connect
from database.store import NeighbourFilter, Search, parse_bpm_within


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("track_id", help="a track id as `cattag tag` wrote it")
    parser.add_argument("--db", required=True, help="the database URL given to `cattag load`")
    parser.add_argument("-k", type=int, default=10, help="how many neighbours (default %(default)s)")
    parser.add_argument("--genre", help="only neighbours tagged with this genre")
    parser.add_argument("--same-key", action="store_true", help="only neighbours in the track's key")
    parser.add_argument("--include-duplicates", action="store_true",
                        help="also the track's own copies, and every copy of a neighbour (default: one copy per "
                             "recording, none of the track's own)")
    parser.add_argument("--bpm-within", metavar="N%|N",
                        help="only neighbours whose tempo is within this of the track's: a share (5%%) or BPM (4)")
    parser.add_argument("--model-version", help="whose embeddings to compare (default: the track's latest tags)")
    parser.add_argument("--exact", action="store_true",
                        help="compare every embedding even where a vector index exists (PostgreSQL with pgvector)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def main(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(prog="cattag similar")
    add_arguments(parser)
    args = parser.parse_args(argv)
    if args.k < 1:
        raise ValueError(f"-k {args.k}: expected at least 1")
    with connect(args.db, read_only=True) as database:
        version = args.model_version or database.latest_model_version(args.track_id)
        found = database.similar(args.track_id, k=args.k, model_version=version, genre=args.genre, exact=args.exact,
                                 neighbours=neighbour_filter(args), include_duplicates=args.include_duplicates)
    if args.json:
        print(json.dumps({"track_id": args.track_id, "model_version": version, "search": found.method,
                          "neighbours": [dataclasses.asdict(n) for n in found.neighbours]}, indent=2))
    else:
        print(format_table(args.track_id, version, found))
    return found


def neighbour_filter(args: argparse.Namespace) -> NeighbourFilter:
    within, share = parse_bpm_within(args.bpm_within) if args.bpm_within else (None, True)
    return NeighbourFilter(same_key=args.same_key, bpm_within=within, bpm_within_is_share=share)


def format_table(track_id: str, version: str, found: Search) -> str:
    neighbours = found.neighbours
    width = max([len("track"), *(len(n.track_id) for n in neighbours)])
    lines = [f"Tracks most like {track_id} (model {version}, cosine similarity of embeddings, {found.method} search):",
             f"  {'track':<{width}}  {'genre':<18} {'confidence':>10} {'similarity':>10}"]
    for n in neighbours:
        lines.append(f"  {n.track_id:<{width}}  {n.genre or '-':<18} {n.confidence:>10.2f} {n.similarity:>10.3f}")
    if not neighbours:
        lines.append("  (no other track has an embedding from this model)")
    return "\n".join(lines)
