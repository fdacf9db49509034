"""What tempo, key and loudness add to `cattag tag`: the same catalogue tagged with --descriptors on and off,
side by side in one run, alternating, with the pretrained tagger; and peak memory against catalogue size.

    .venv/bin/python bench/descriptors_cost.py [--copies 10] [--rounds 2]
                                               [--flag descriptors|health|group-copies]
                                               [--workdir /tmp/cattag-descriptors-cost]

(--flag health switches the health checks, the fingerprint and the copies found from it (FindCopies, the
loudness outliers) on and off instead, descriptors on in both; --flag group-copies runs `cattag featurize`
with --group-copies on and off: the fingerprint in the decode, the clustering, and the examples waiting for it.
The catalogue's repeats of each clip are copies of one recording, so every track there has 9 copies.)

Catalogue: ../shared/data/gtzan-dev repeated --copies times under distinct names (600 clips by default,
bench/featurize_bench.py's catalogue). Each run is `cattag tag --model musicnn-msd` in its own process with
one worker (bench/tag_bench.py's harness: wall time of the job, the process's peak resident memory); the
on and off runs alternate --rounds times, so drift on a shared machine falls on both. Memory: one more
run with descriptors on over the 60 clips alone.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
GTZAN = REPO.parent / "shared" / "data" / "gtzan-dev"


def main() -> None:
    from tag_bench import child, run

    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--copies", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workdir", default="/tmp/cattag-descriptors-cost")
    parser.add_argument("--flag", choices=("descriptors", "health", "group-copies"), default="descriptors",
                        help="which analysis to switch on and off (the other stays on)")
    args = parser.parse_args()
    from featurize_bench import make_catalogue

    work = pathlib.Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    catalogue, small = work / "catalogue", work / "catalogue-small"
    paths, small_paths = make_catalogue(catalogue, args.copies), make_catalogue(small, 1)
    for source in GTZAN.glob("*/*.flac"):  # warm the page cache for every run alike
        source.read_bytes()

    command = "featurize" if args.flag == "group-copies" else "tag"

    def flags(source: pathlib.Path, name: str, setting: str) -> list[str]:
        model = [] if command == "featurize" else ["--model", "musicnn-msd"]
        return ["--input", str(source), "--output", str(work / name), "--overwrite", *model, f"--{args.flag}", setting]

    runs: dict[str, list[dict]] = {"on": [], "off": []}
    for round_ in range(args.rounds):
        for setting in (("on", "off") if round_ % 2 == 0 else ("off", "on")):
            result = run(command, flags(catalogue, f"{command}-{setting}", setting), 1)
            runs[setting].append(result)
            print(f"round {round_}: {args.flag} {setting}: {result['wall_s']:.1f} s, peak {result['peak_mb']:.0f} MiB",
                  flush=True)
    small_run = run(command, flags(small, f"{command}-small", "on"), 1)

    wall = {setting: statistics.median(r["wall_s"] for r in results) for setting, results in runs.items()}
    audio_s = runs["on"][0]["audio_s"]
    what = "cattag featurize" if command == "featurize" else "cattag tag, musicnn-msd"
    print(f"\n{len(paths)} tracks ({audio_s / 3600:.2f} audio hours), {what}, 1 worker, "
          f"median of {args.rounds} alternating runs each\n")
    print(f"| {args.flag} | wall s | audio-s/s | peak MiB |\n|---|---:|---:|---:|")
    for setting in ("off", "on"):
        peak = max(r["peak_mb"] for r in runs[setting])
        print(f"| {setting} | {wall[setting]:.1f} | {audio_s / wall[setting]:.0f} | {peak:.0f} |")
    print(f"\nAdded wall time with --{args.flag} on: {100 * (wall['on'] / wall['off'] - 1):+.1f}%")
    big_peak = max(r["peak_mb"] for r in runs["on"])
    print(f"Peak memory with {args.flag} on: {small_run['peak_mb']:.0f} MiB for {len(small_paths)} tracks, "
          f"{big_peak:.0f} MiB for {len(paths)} ({big_peak / small_run['peak_mb']:.2f}x for "
          f"{len(paths) / len(small_paths):.0f}x the tracks)")


if __name__ == "__main__":
    main()
