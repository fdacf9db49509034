"""Does a genre model flag non-music for review? Tags ../shared/data/catalogue-sample (music,
speech, birdsong, a whale; SOURCES.csv says which) with each given model and prints, per file,
its kind, genre, confidence, typicality and review reason, then how many non-music files each
model flagged and how many music files it let through unflagged.

    .venv/bin/python bench/non_music.py --model MDIR [--model MDIR ...]

The models are `cattag train` outputs, for example the default architecture's fold models that
bench/accuracy_cv.py leaves in its work directory (trained on 48 GTZAN tracks each).
"""

from __future__ import annotations

import argparse
import csv
import pathlib
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SAMPLE = REPO.parent / "shared" / "data" / "catalogue-sample"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", action="append", required=True)
    args = parser.parse_args()
    from pipelines import tag

    with open(SAMPLE / "SOURCES.csv", newline="") as handle:
        kind = {row["file"]: row["kind"] for row in csv.DictReader(handle)}
    summary = []
    for model in args.model:
        with tempfile.TemporaryDirectory() as out:
            tag.run(["--input", str(SAMPLE), "--model", model, "--output", out, "--progress", "off"])
            rows = {pathlib.Path(r["uri"]).name: r for r in tag.read_tags(out).to_pylist()}
        print(f"\n{model}\n| file | kind | genre | confidence | typicality | review reason |\n|---|---|---|---:|---:|---|")
        for name in sorted(rows, key=lambda n: (kind[n], n)):
            row = rows[name]
            print(f"| {name[:40]} | {kind[name]} | {row['genre']} | {row['confidence']:.2f} | "
                  f"{row['typicality']:.3f} | {row['review_reason'] or ''} |")
        non_music = [n for n in rows if kind[n] != "music"]
        music = [n for n in rows if kind[n] == "music"]
        summary.append((model, sum(rows[n]["low_confidence"] for n in non_music), len(non_music),
                        sum(not rows[n]["low_confidence"] for n in music), len(music)))
    print("\n| model | non-music flagged | music not flagged |\n|---|---:|---:|")
    for model, flagged, n_non, passed, n_music in summary:
        print(f"| {model} | {flagged}/{n_non} | {passed}/{n_music} |")


if __name__ == "__main__":
    main()
