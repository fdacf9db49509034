"""`cattag report` on tag outputs of 10^4, 10^5 and 10^6 tracks: wall time, peak RSS, page size (issue 16).

    .venv/bin/python bench/report_bench.py [--sizes 10000 100000 1000000]

Tag files as bench/load_bench.py writes them (200-d embeddings with a catalogue's genre and artist
structure, shards of 100,000 rows, about a fifth of the tracks below the review threshold), one
`cattag report` process each, its peak RSS from GNU time. The report reads the files once, a few
columns at a time, and keeps bounded samples, so its memory should not follow the catalogue.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.load_bench import CATTAG, catalogue_embeddings, run_measured, write_tag_files  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    args = parser.parse_args()
    work = pathlib.Path(tempfile.mkdtemp(prefix="cattag-report-bench-"))
    rows = []
    for size in args.sizes:
        genre, embedding = catalogue_embeddings(size, 200)
        tags_dir = work / f"tags-{size}"
        write_tag_files(tags_dir, genre, embedding)
        del genre, embedding
        page = work / f"report-{size}.html"
        wall, peak = run_measured([CATTAG, "report", "--tags", str(tags_dir), "--output", str(page)])
        rows.append((size, wall, peak, page.stat().st_size / 1024))
        print(f"{size:>8} tracks: {wall:6.1f} s, peak RSS {peak:6.0f} MiB, page {page.stat().st_size / 1024:6.0f} kB",
              flush=True)
    print("\n| tracks | wall s | tracks/s | peak RSS MiB | page kB |")
    print("|---:|---:|---:|---:|---:|")
    for size, wall, peak, kb in rows:
        print(f"| {size:,} | {wall:.1f} | {size / wall:,.0f} | {peak:.0f} | {kb:.0f} |")


if __name__ == "__main__":
    main()
