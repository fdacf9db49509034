"""cattag search: the tracks carrying given tags (all of them, or any), from the recommender database."""

from __future__ import annotations

import argparse
import dataclasses
import json

from database import connect
from database.store import TagSearch


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", required=True, help="the database URL given to `cattag load`")
    parser.add_argument("--tag", action="append", required=True, metavar="TAG", dest="tags",
                        help="a tag the tracks carry (repeat for several; matched case-insensitively)")
    parser.add_argument("--any", action="store_true",
                        help="tracks carrying any of the tags (default: all of them)")
    parser.add_argument("-k", type=int, default=10, help="how many tracks (default %(default)s)")
    parser.add_argument("--model-version",
                        help="whose tags to search (default: the latest model version whose tracks carry these tags)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def main(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(prog="cattag search")
    add_arguments(parser)
    args = parser.parse_args(argv)
    if args.k < 1:
        raise ValueError(f"-k {args.k}: expected at least 1")
    with connect(args.db, read_only=True) as database:
        found = database.search(args.tags, k=args.k, model_version=args.model_version,
                                match="any" if args.any else "all")
    if args.json:
        print(json.dumps(dataclasses.asdict(found), indent=2))
    else:
        print(format_table(found))
    return found


def format_table(found: TagSearch) -> str:
    tracks = found.tracks
    joined = (" and " if found.match == "all" else " or ").join(found.tags)
    version = f"model {found.model_version}" + (", the latest with these tags" if found.latest else "")
    width = max([len("track"), *(len(t.track_id) for t in tracks)])
    lines = [f"Tracks tagged {joined} ({version}; ranked by the mean score of the matched tags):",
             f"  {'track':<{width}}  {'genre':<18} {'confidence':>10} {'score':>6}  tags"]
    for t in tracks:
        matched = ", ".join(f"{m.tag} {m.score:.2f}" for m in t.tags)
        lines.append(f"  {t.track_id:<{width}}  {t.genre or '-':<18} {t.confidence:>10.2f} {t.score:>6.3f}  {matched}")
    if not tracks:
        lines.append(f"  (no track carries {'all' if found.match == 'all' else 'any'} of these tags)")
    return "\n".join(lines)
