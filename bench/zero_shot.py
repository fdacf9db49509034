"""How right are the pretrained tagger's tags with no training? `cattag tag --model musicnn-msd` on
music it never saw: the 60 GTZAN-dev clips (genre labels) and ../shared/data/catalogue-sample
(music, speech, birds, a whale; SOURCES.csv).

    .venv/bin/python bench/zero_shot.py [--model musicnn-msd] [--threshold 0.2]

GTZAN genres are mapped to the MSD tag of the same name where one exists (blues, country, hiphop ->
Hip-Hop, jazz, metal, pop, rock; disco, reggae and classical have none, and are left out). Per
mapped clip: is the `genre` column that tag (top-1), is it among the tags carried (over the
threshold), and how many other genre tags are carried beside it. Per catalogue-sample file: its
genre, carried tags and whether it is flagged for review. The threshold is not tuned on these
clips: they only report what the default does.
"""

from __future__ import annotations

import argparse
import csv
import pathlib
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "data"
GTZAN_TO_MSD = {"blues": "blues", "country": "country", "hiphop": "Hip-Hop", "jazz": "jazz", "metal": "metal",
                "pop": "pop", "rock": "rock"}


def tag_folder(folder: pathlib.Path, model: str, threshold: float | None) -> dict[str, dict]:
    from pipelines import tag

    with tempfile.TemporaryDirectory() as out:
        flags = ["--input", str(folder), "--model", model, "--output", out, "--progress", "off", "--top-k", "5"]
        if threshold is not None:
            flags += ["--tag-threshold", str(threshold)]
        tag.run(flags)
        return {pathlib.Path(r["uri"]).name: r for r in tag.read_tags(out).to_pylist()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="musicnn-msd")
    parser.add_argument("--threshold", type=float, default=None, help="default: the model card's")
    args = parser.parse_args()

    with open(DATA / "gtzan-dev" / "manifest.csv", newline="") as handle:
        genre_of = {pathlib.Path(row["path"]).name: row["genre"] for row in csv.DictReader(handle)}
    rows = tag_folder(DATA / "gtzan-dev", args.model, args.threshold)
    mapped = [name for name in rows if genre_of[name] in GTZAN_TO_MSD]
    print(f"GTZAN-dev, {len(mapped)} clips of the {len(GTZAN_TO_MSD)} genres with an MSD tag of their own")
    print("| GTZAN genre | clips | genre column right | its tag carried | other genre tags carried, mean |")
    print("|---|---:|---:|---:|---:|")
    totals = [0, 0, 0, 0.0]
    for genre, msd in GTZAN_TO_MSD.items():
        clips = [rows[n] for n in mapped if genre_of[n] == genre]
        top1 = sum(r["genre"] == msd for r in clips)
        carried = sum(msd in {t["label"] for t in r["tags"]} for r in clips)
        others = sum(len([t for t in r["tags"] if t["label"] != msd]) for r in clips) / len(clips)
        totals = [totals[0] + len(clips), totals[1] + top1, totals[2] + carried, totals[3] + others * len(clips)]
        print(f"| {genre} | {len(clips)} | {top1}/{len(clips)} | {carried}/{len(clips)} | {others:.1f} |")
    print(f"| all | {totals[0]} | {totals[1]}/{totals[0]} | {totals[2]}/{totals[0]} | {totals[3] / totals[0]:.1f} |")

    with open(DATA / "catalogue-sample" / "SOURCES.csv", newline="") as handle:
        kind = {row["file"]: row["kind"] for row in csv.DictReader(handle)}
    rows = tag_folder(DATA / "catalogue-sample", args.model, args.threshold)
    print("\ncatalogue-sample\n| file | kind | genre | confidence | tags carried | review |\n|---|---|---|---:|---|---|")
    for name in sorted(rows, key=lambda n: (kind[n], n)):
        row = rows[name]
        carried = ", ".join(f"{t['label']} {t['score']:.2f}" for t in row["tags"] or []) or "-"
        print(f"| {name[:40]} | {kind[name]} | {row['genre']} | {row['confidence']:.2f} | {carried} | "
              f"{row['review_reason'] or ''} |")


if __name__ == "__main__":
    main()
