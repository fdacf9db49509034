"""cattag search: the tracks carrying given tags (all of them, or any), and/or with a tempo, key or loudness
in a range, from the recommender database."""

from __future__ import annotations

import argparse
import dataclasses
import json

from database import connect
from database.store import DescriptorFilter, TagSearch, parse_bpm_range
from transforms.health import FLAGS
from transforms.key import PITCH_CLASSES, compatible_keys, parse_key


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", required=True, help="the database URL given to `cattag load`")
    parser.add_argument("--tag", action="append", default=[], metavar="TAG", dest="tags",
                        help="a tag the tracks carry (repeat for several; matched case-insensitively)")
    parser.add_argument("--bpm", metavar="LOW-HIGH", help="tempo between these beats per minute, e.g. 118-126")
    parser.add_argument("--key", help='the key, e.g. "A minor" or "F# major" (flats accepted: "Bb major")')
    parser.add_argument("--key-compatible", action="store_true",
                        help="with --key: also its Camelot neighbours (one step either way, and the relative key)")
    parser.add_argument("--loudness-max", type=float, metavar="LUFS", help="integrated loudness at most this, e.g. -9")
    parser.add_argument("--loudness-min", type=float, metavar="LUFS", help="integrated loudness at least this")
    parser.add_argument("--health", metavar="FLAG",
                        help=f"tracks carrying this health flag: {', '.join(f.replace(' ', '-') for f in FLAGS)}")
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
    descriptors = descriptor_filter(args)
    if not args.tags and not descriptors:
        raise ValueError("give --tag, or a filter (--bpm, --key, --loudness-max, --loudness-min, --health), or both")
    with connect(args.db, read_only=True) as database:
        found = database.search(args.tags, k=args.k, model_version=args.model_version,
                                match="any" if args.any else "all", descriptors=descriptors)
    if args.json:
        print(json.dumps(dataclasses.asdict(found), indent=2))
    else:
        print(format_table(found))
    return found


def descriptor_filter(args: argparse.Namespace) -> DescriptorFilter:
    if args.key_compatible and not args.key:
        raise ValueError("--key-compatible goes with --key")
    low, high = parse_bpm_range(args.bpm) if args.bpm else (None, None)
    keys: tuple[str, ...] = ()
    if args.key:
        tonic, mode = parse_key(args.key)
        keys = tuple(compatible_keys(tonic, mode)) if args.key_compatible else (f"{PITCH_CLASSES[tonic]} {mode}",)
    health = None
    if args.health:
        health = args.health.strip().lower().replace("-", " ")
        if health not in FLAGS:
            raise ValueError(f"--health {args.health!r}: expected one of {', '.join(f.replace(' ', '-') for f in FLAGS)}")
    return DescriptorFilter(low, high, keys, args.loudness_min, args.loudness_max, health)


def format_table(found: TagSearch) -> str:
    tracks = found.tracks
    width = max([len("track"), *(len(t.track_id) for t in tracks)])
    described = f"  {'bpm':>6} {'key':<9} {'LUFS':>6}"
    if not found.tags:
        lines = ["Tracks matching these filters:", f"  {'track':<{width}}{described}"]
        lines += [f"  {t.track_id:<{width}}{_descriptors(t)}" for t in tracks]
        if not tracks:
            lines.append("  (no track matches these filters)")
        return "\n".join(lines)
    joined = (" and " if found.match == "all" else " or ").join(found.tags)
    version = f"model {found.model_version}" + (", the latest with these tags" if found.latest else "")
    lines = [f"Tracks tagged {joined} ({version}; ranked by the mean score of the matched tags):",
             f"  {'track':<{width}}  {'genre':<18} {'confidence':>10} {'score':>6}{described}  tags"]
    for t in tracks:
        matched = ", ".join(f"{m.tag} {m.score:.2f}" for m in t.tags)
        lines.append(f"  {t.track_id:<{width}}  {t.genre or '-':<18} {t.confidence:>10.2f} {t.score:>6.3f}"
                     f"{_descriptors(t)}  {matched}")
    if not tracks:
        lines.append(f"  (no track carries {'all' if found.match == 'all' else 'any'} of these tags)")
    return "\n".join(lines)


def _descriptors(track) -> str:
    bpm = f"{track.bpm:6.1f}" if track.bpm is not None else f"{'-':>6}"
    lufs = f"{track.loudness_lufs:6.1f}" if track.loudness_lufs is not None else f"{'-':>6}"
    return f"  {bpm} {track.key or '-':<9} {lufs}"

