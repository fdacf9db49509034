"""What linking new copies to held recordings costs an incremental `cattag tag --skip-existing` run
(transforms/link_copies.py: the held fingerprints read and indexed again each run), against the output's size.

    .venv/bin/python bench/link_cost.py [--held 10000,100000] [--new 20] [--rounds 2]
                                        [--workdir /tmp/cattag-link-cost]

For each size, an output is made holding that many tag rows: generated fingerprints (240 random words, a
30 s track) and, among them, the real rows of --new/2 GTZAN-dev clips (tagged first, so their fingerprints
are the product's). The new folder holds an MP3 of each of those clips (a copy of a held track) and
--new/2 other clips. Then `cattag tag --skip-existing --model musicnn-msd` runs over it with
--link-duplicates on and off, alternating --rounds times, each in its own process with one worker on a
fresh copy of the output: wall time and peak memory, and how many new rows joined a held recording.
"""

from __future__ import annotations

import argparse
import pathlib
import shutil
import statistics
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
GTZAN = REPO.parent / "shared" / "data" / "gtzan-dev"


def clips(n: int) -> list[pathlib.Path]:
    """n GTZAN-dev clips, one genre after another."""
    found = sorted(GTZAN.glob("*/*.flac"))
    by_genre: dict[str, list[pathlib.Path]] = {}
    for path in found:
        by_genre.setdefault(path.parent.name, []).append(path)
    ordered = [v[i] for i in range(max(len(v) for v in by_genre.values())) for v in by_genre.values() if i < len(v)]
    return ordered[:n]


def held_output(folder: pathlib.Path, size: int, real: pathlib.Path, model_version: str = "generated") -> None:
    """`folder`: the real rows (a tag output of the held clips) plus generated rows up to `size`, in files of
    10,000 rows with the columns an incremental run reads."""
    rng = np.random.default_rng(11)
    schema = pa.schema([("track_id", pa.string()), ("model_version", pa.string()),
                        ("content_fingerprint", pa.string()), ("fingerprint", pa.list_(pa.uint32())),
                        ("recording_id", pa.string()), ("duplicate_of", pa.string()),
                        ("tagged_at", pa.timestamp("s", tz="UTC"))])
    shutil.copytree(real, folder)
    done = 0
    while done < size:
        n = min(10_000, size - done)
        words = rng.integers(0, 2**32, (n, 240), dtype=np.uint64).astype(np.uint32)
        table = pa.table({
            "track_id": [f"generated/{done + i:07d}.flac" for i in range(n)],
            "model_version": [model_version] * n,
            "content_fingerprint": [f"{done + i:032x}" for i in range(n)],
            "fingerprint": pa.array(list(words), pa.list_(pa.uint32())),
            "recording_id": [None] * n, "duplicate_of": [None] * n,
            "tagged_at": pa.array([0] * n, pa.timestamp("s", tz="UTC"))}, schema=schema)
        pq.write_table(table, folder / f"tags-generated-{done // 10_000:05d}.parquet")
        done += n


def watch_index_figures(held: pathlib.Path, tagged: pathlib.Path, size: int) -> str:
    """A watch window's lookup against `held`: the first builds the per-file index, the next reuses it."""
    import time

    from transforms.link_copies import HeldRecordings

    new = pq.read_table(sorted(set(tagged.glob("tags-*.parquet")) - set(held.glob("tags-*.parquet")))[0],
                        columns=["track_id", "fingerprint"]).to_pylist()
    words = {row["track_id"]: np.asarray(row["fingerprint"], np.uint32) for row in new if row["fingerprint"]}
    index = HeldRecordings(str(held))
    started = time.perf_counter()
    found = index.copies_of(words)
    first = time.perf_counter() - started
    started = time.perf_counter()
    index.copies_of(words)
    again = time.perf_counter() - started
    held_bytes = sum(f.keys.nbytes + f.rows.nbytes for f in index._files.values())
    return f"| {size:,} | {first:.2f} | {again:.3f} | {held_bytes / 2**20:.0f} | {len(found)} |"


def main() -> None:
    from tag_bench import child, run

    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--held", default="10000,100000")
    parser.add_argument("--new", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workdir", default="/tmp/cattag-link-cost")
    parser.add_argument("--reuse", action="store_true",
                        help="compare --reuse-duplicates (on) against --link-duplicates off, the generated rows "
                             "of the tagging model's version: what reusing copies' tags costs against the output's size")
    args = parser.parse_args()
    work = pathlib.Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    (work / "held-clips").mkdir(parents=True)
    (work / "new").mkdir()
    picked = clips(args.new)
    for path in picked[:args.new // 2]:
        shutil.copy(path, work / "held-clips" / path.name)
        subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(path), "-b:a", "128k",
                        str(work / "new" / f"{path.stem}-compilation.mp3")], check=True)
    for path in picked[args.new // 2:]:
        shutil.copy(path, work / "new" / path.name)
    from pipelines import tag

    tag.run(["--input", str(work / "held-clips"), "--output", str(work / "real"), "--model", "musicnn-msd",
             "--progress", "off", "--direct_num_workers", "1"])
    lines, watch_lines = [], []
    for size in (int(s) for s in args.held.split(",")):
        held = work / f"held-{size}"
        version = pq.read_table(sorted((work / "real").glob("tags-*.parquet"))[0], columns=["model_version"]).column(0)[0].as_py()
        held_output(held, size, work / "real", version if args.reuse else "generated")
        times: dict[str, list[float]] = {"on": [], "off": []}
        peaks: dict[str, list[float]] = {"on": [], "off": []}
        linked = None
        for round_ in range(args.rounds):
            for link in (("on", "off") if round_ % 2 == 0 else ("off", "on")):
                out = work / f"out-{size}-{link}"
                shutil.rmtree(out, ignore_errors=True)
                shutil.copytree(held, out)
                flags = (["--reuse-duplicates"] if link == "on" else ["--link-duplicates", "off"]) if args.reuse \
                    else ["--link-duplicates", link]
                result = run("tag", ["--input", str(work / "new"), "--output", str(out), "--model", "musicnn-msd",
                                     "--skip-existing", *flags], 1)
                times[link].append(result["wall_s"])
                peaks[link].append(result["peak_mb"])
                print(f"held {size:,}, round {round_}: link {link}: {result['wall_s']:.1f} s, "
                      f"peak {result['peak_mb']:.0f} MiB", flush=True)
                if link == "on":
                    rows = tag.read_tags(str(out), ["track_id", "recording_id"]).to_pylist()
                    real = {row["track_id"]: row for row in rows if not row["track_id"].startswith("generated/")}
                    linked = sum(1 for row in real.values() if row["track_id"].endswith("-compilation.mp3")
                                 and row["recording_id"] == real[row["track_id"].replace("-compilation.mp3", ".flac")]
                                 ["recording_id"])
        if not args.reuse:
            watch_lines.append(watch_index_figures(held, work / f"out-{size}-on", size))
        on, off = statistics.median(times["on"]), statistics.median(times["off"])
        lines.append(f"| {size:,} | {off:.1f} | {on:.1f} | {on - off:+.1f} s ({(on / off - 1) * 100:+.1f}%) | "
                     f"{max(peaks['off']):.0f} | {max(peaks['on']):.0f} | {linked}/{args.new // 2} |")
        shutil.rmtree(held)
    print(f"\n{args.new} new files ({args.new // 2} MP3 copies of held clips), musicnn-msd, 1 worker, "
          f"median of {args.rounds} alternating runs each\n")
    if args.reuse:
        print("on: --reuse-duplicates; off: --link-duplicates off (held rows of the tagging model's version)\n")
    print("| held rows | link off s | link on s | added | peak MiB off | peak MiB on | copies linked |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    print("\n".join(lines))
    if args.reuse:
        return
    print(f"\nThe watch's held index (transforms/link_copies.HeldRecordings), in this process: a window of the "
          f"{args.new} new tracks looked up\n")
    print("| held rows | first window s (index built) | next window s | index MiB | copies found |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    print("\n".join(watch_lines))


if __name__ == "__main__":
    main()
