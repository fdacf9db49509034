"""Tagging throughput beside featurize throughput, side by side in one run on the same files.

    .venv/bin/python bench/tag_bench.py [--copies 5] [--model MDIR|musicnn-msd] [--small-copies 1]
                                        [--workdir /tmp/cattag-tag-bench]

On ../shared/data/gtzan-dev repeated --copies times under distinct names (bench/featurize_bench.py's
catalogue), runs, each in its own subprocess and in alternation:
  * cattag featurize and cattag tag with 1 worker (in-process) and 2 workers (multi_processing);
  * cattag tag with 1 worker at inference batch sizes 8, 64 (the default) and 256;
  * cattag tag with 1 worker on a --small-copies catalogue, for peak memory against catalogue size
    (every run reports its process's peak resident memory; with 2 workers, the launcher's).
Tag does everything featurize does up to the log-mels (decode, resample, segment, mel) and then
runs the model and aggregates per track, where featurize encodes and writes TFRecords and
statistics; the ratio is the cost of inference. --model musicnn-msd tags with the pretrained
tagger, no training. Without --model, the default model is trained for one epoch on the clips
first: its speed, not its accuracy, matters here.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
GTZAN = REPO.parent / "shared" / "data" / "gtzan-dev"


def child(kind: str, args: list[str]) -> None:
    started = time.perf_counter()
    if kind == "featurize":
        from pipelines import featurize

        result = featurize.run([*args, "--progress", "off"])
        tracks, audio_s = result.totals["tracks"], result.totals["audio_ms"] / 1000
    else:
        from pipelines import tag

        result = tag.run([*args, "--progress", "off"])
        tracks, audio_s = result.tagged, result.audio_s
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"tracks": tracks, "audio_s": audio_s, "wall_s": time.perf_counter() - started,
                      "peak_mb": peak_mb}))


def run(kind: str, flags: list[str], workers: int) -> dict:
    if workers > 1:
        flags = [*flags, "--direct_num_workers", str(workers), "--direct_running_mode", "multi_processing"]
    done = subprocess.run([sys.executable, __file__, "--child", kind, *flags], capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, check=False)
    if done.returncode:
        raise SystemExit(f"{kind} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def default_model(work: pathlib.Path) -> str:
    from pipelines import featurize
    from trainer.task import TrainConfig
    from trainer.task import run as train

    model = work / "model"
    if not (model / "model.json").exists():
        featurize.run(["--input", str(GTZAN / "manifest.csv"), "--output", str(work / "train-features"),
                       "--overwrite", "--progress", "off"])
        train(TrainConfig(data_dir=str(work / "train-features"), model_dir=str(model), epochs=1, verbose=0))
    return str(model)


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3:])
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--copies", type=int, default=5, help="catalogue = copies x 60 GTZAN clips (default 5)")
    parser.add_argument("--model", help="a cattag model or a pretrained name (default: train the default model "
                                        "for one epoch)")
    parser.add_argument("--small-copies", type=int, default=1, help="the small catalogue of the memory run")
    parser.add_argument("--workdir", default="/tmp/cattag-tag-bench")
    args = parser.parse_args()
    from featurize_bench import make_catalogue

    work = pathlib.Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    model = args.model or default_model(work)
    catalogue = work / "catalogue"
    paths = make_catalogue(catalogue, args.copies)
    small = work / "catalogue-small"
    small_paths = make_catalogue(small, args.small_copies)
    for source in GTZAN.glob("*/*.flac"):  # warm the page cache for every contender alike
        source.read_bytes()

    def featurize_flags(name: str) -> list[str]:
        return ["--input", str(catalogue), "--output", str(work / name), "--overwrite"]

    def tag_flags(name: str, batch: int = 64) -> list[str]:
        return ["--input", str(catalogue), "--output", str(work / name), "--overwrite", "--model", model,
                "--inference-batch-size", str(batch)]

    results = {}
    for workers in (1, 2):
        results[("featurize", workers)] = run("featurize", featurize_flags(f"features-{workers}"), workers)
        results[("tag", workers)] = run("tag", tag_flags(f"tags-{workers}"), workers)
    batches = {batch: run("tag", tag_flags(f"tags-batch{batch}", batch), 1) for batch in (8, 64, 256)}
    small_run = run("tag", ["--input", str(small), "--output", str(work / "tags-small"), "--overwrite", "--model",
                            model], 1)

    audio_h = results[("featurize", 1)]["audio_s"] / 3600
    print(f"\n{len(paths)} tracks ({audio_h:.2f} audio hours), {os.cpu_count()} cores, model {model}\n")
    print("| workers | featurize tracks/s | featurize audio-s/s | tag tracks/s | tag audio-s/s | tag / featurize "
          "| tag peak MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for workers in (1, 2):
        f, t = results[("featurize", workers)], results[("tag", workers)]
        f_rate, t_rate = f["audio_s"] / f["wall_s"], t["audio_s"] / t["wall_s"]
        print(f"| {workers} | {f['tracks'] / f['wall_s']:.2f} | {f_rate:.0f} | {t['tracks'] / t['wall_s']:.2f} | "
              f"{t_rate:.0f} | {t_rate / f_rate:.2f} | {t['peak_mb']:.0f} |")
    big = results[("tag", 1)]
    print(f"\nPeak memory of tag, 1 worker: {small_run['peak_mb']:.0f} MiB for {len(small_paths)} tracks, "
          f"{big['peak_mb']:.0f} MiB for {len(paths)} tracks ({big['peak_mb'] / small_run['peak_mb']:.2f}x for "
          f"{len(paths) / len(small_paths):.0f}x the tracks)")
    print("\n| tag, 1 worker, inference batch size | wall s | tracks/s | audio-s/s |\n|---|---:|---:|---:|")
    for batch, r in batches.items():
        print(f"| {batch} | {r['wall_s']:.1f} | {r['tracks'] / r['wall_s']:.2f} | {r['audio_s'] / r['wall_s']:.0f} |")


if __name__ == "__main__":
    main()
