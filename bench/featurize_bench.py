"""Featurize throughput and memory, side by side in one run on the same files.

    .venv/bin/python bench/featurize_bench.py [--copies 20] [--workdir /tmp/cattag-bench]

Measures, on ../shared/data/gtzan-dev repeated --copies times under distinct names:
  * bare loop: librosa.load + librosa mel (same FeatureConfig parameters), one process, no Beam,
    no output written; run before and after the pipelines, and the mean is the baseline;
  * cattag featurize, DirectRunner, 1 worker (in-process), 2 worker processes (multi_processing)
    and 2 worker threads in the launching process (multi_threading), end to end: listing, decoding, mel, encoding, gzip TFRecords, statistics, metadata;
  * the fixed start-up cost of each pipeline mode (a one-track run), so throughput can be read
    with and without it;
  * peak resident memory of each pipeline process for 60, 600 and the full catalogue.
Each pipeline run is its own subprocess, so its peak memory is its own. Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import shutil
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
GTZAN = REPO.parent / "shared" / "data" / "gtzan-dev"


def make_catalogue(folder: pathlib.Path, copies: int) -> list[pathlib.Path]:
    """copies x the GTZAN clips as symlinks with distinct names (distinct track ids)."""
    if folder.exists():
        shutil.rmtree(folder)
    sources = sorted(GTZAN.glob("*/*.flac"))
    paths = []
    for copy in range(copies):
        for source in sources:
            link = folder / source.parent.name / f"{source.stem}-c{copy:02d}.flac"
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(source)
            paths.append(link)
    return paths


def bare_loop(paths: list[pathlib.Path], cfg=None, threads: int | None = None) -> dict:
    """librosa load + mel + log over `paths` in one process; `cfg`: featurize's default config unless given;
    `threads`: BLAS/OpenMP threads (None: the libraries' default, which takes every core)."""
    if threads is not None:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=threads):
            return bare_loop(paths, cfg)
    import librosa

    from schemas.features import DEFAULT_PRESET, PRESETS

    cfg = cfg or PRESETS[DEFAULT_PRESET]
    librosa.feature.melspectrogram(y=librosa.load(paths[0], sr=cfg.sample_rate_hz)[0], sr=cfg.sample_rate_hz)  # warm-up
    audio_s, started = 0.0, time.perf_counter()
    for path in paths:
        samples, sr = librosa.load(path, sr=cfg.sample_rate_hz, mono=True)
        mel = librosa.feature.melspectrogram(
            y=samples, sr=sr, n_fft=cfg.n_fft, hop_length=cfg.hop_length, n_mels=cfg.n_mels,
            fmin=cfg.fmin_hz, fmax=cfg.fmax_hz)
        librosa.power_to_db(mel, ref=cfg.db_ref_power, amin=1e-10, top_db=None)
        audio_s += len(samples) / sr
    return {"audio_s": audio_s, "wall_s": time.perf_counter() - started}


def child(args: list[str]) -> None:
    """Runs featurize in this process and prints its timing and the peak memory of the processes."""
    from pipelines import featurize

    started = time.perf_counter()
    result = featurize.run([*args, "--progress", "off"])
    print(json.dumps({
        "audio_s": result.totals["audio_ms"] / 1000,
        "segments": result.totals["segments"],
        "wall_s": time.perf_counter() - started,
        "launcher_peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "worker_peak_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }))


# DirectRunner modes: (name, Beam flags). Worker processes each import Beam and the transforms; worker
# threads share the launching process, whose GIL the decoding, FFT and mel products release.
MODES = {
    "1 worker (in-process)": [],
    "2 workers (multi_processing)": ["--direct_num_workers", "2", "--direct_running_mode", "multi_processing"],
    "2 threads (multi_threading)": ["--direct_num_workers", "2", "--direct_running_mode", "multi_threading"],
}


def pipeline(catalogue: pathlib.Path, output: pathlib.Path, mode: str) -> dict:
    flags = ["--input", str(catalogue), "--output", str(output), "--overwrite", *MODES[mode]]
    done = subprocess.run([sys.executable, __file__, "--child", *flags], capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    # Runs without worker processes have no children: the launcher is the worker.
    result["per_worker_peak_mib"] = result["worker_peak_mib"] or result["launcher_peak_mib"]
    return result


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--copies", type=int, default=20, help="catalogue = copies x 60 GTZAN clips (default 20)")
    parser.add_argument("--workdir", default="/tmp/cattag-bench")
    args = parser.parse_args()
    work = pathlib.Path(args.workdir)
    sizes = sorted({1, 60, 600, 60 * args.copies})
    catalogues = {}
    for size in sizes:
        paths = make_catalogue(work / f"catalogue-{size}", max(size // 60, 1))
        for extra in paths[size:]:  # the one-track catalogue: one copy of the 60, less 59
            extra.unlink()
        catalogues[size] = paths[:size]
    largest = max(sizes)
    for source in GTZAN.glob("*/*.flac"):  # warm the page cache for every contender alike
        source.read_bytes()

    # The bare loop runs before and after the pipelines and its mean is the baseline, so that a
    # drift in machine speed during the run (a shared VM) weighs on both sides alike.
    # Each bare loop twice: with the libraries' default threads (BLAS may use both cores for the mel
    # product) and pinned to one thread, which is what "one process" should mean for the baseline.
    bare_before = bare_loop(catalogues[largest])
    single_before = bare_loop(catalogues[largest], threads=1)
    runs = {(size, mode): pipeline(work / f"catalogue-{size}", work / f"out-{size}-{index}", mode)
            for index, mode in enumerate(MODES) for size in sizes}
    for mode in MODES:  # the start-up run must be what it says (an earlier version featurized 60 tracks)
        assert runs[(1, mode)]["segments"] <= 20, runs[(1, mode)]
    single_after = bare_loop(catalogues[largest], threads=1)
    bare_after = bare_loop(catalogues[largest])
    bare = {"audio_s": bare_before["audio_s"], "wall_s": (bare_before["wall_s"] + bare_after["wall_s"]) / 2}
    bare_rate = bare["audio_s"] / bare["wall_s"]
    single_rate = bare["audio_s"] / ((single_before["wall_s"] + single_after["wall_s"]) / 2)

    print(f"\n{largest} tracks ({bare['audio_s'] / 3600:.2f} audio hours), {os.cpu_count()} cores, "
          f"bare loop {bare_before['wall_s']:.1f} s before and {bare_after['wall_s']:.1f} s after the "
          f"pipelines, mean {bare_rate:.0f} audio-s/s; pinned to one BLAS thread {single_before['wall_s']:.1f} s "
          f"and {single_after['wall_s']:.1f} s, mean {single_rate:.0f} audio-s/s\n")
    print("| cattag featurize | start-up s (1 track) | wall s | audio-s/s | x bare loop | "
          "x bare loop, start-up excluded | x 1-thread bare loop | x 1-thread bare loop, start-up excluded |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in MODES:
        startup, run = runs[(1, name)]["wall_s"], runs[(largest, name)]
        rate = run["audio_s"] / run["wall_s"]
        steady = run["audio_s"] / (run["wall_s"] - startup)
        print(f"| {name} | {startup:.1f} | {run['wall_s']:.1f} | {rate:.0f} | {rate / bare_rate:.2f} | "
              f"{steady / bare_rate:.2f} | {rate / single_rate:.2f} | {steady / single_rate:.2f} |")
    print("\n| peak RSS per worker process | " + " | ".join(f"{s} tracks" for s in sizes if s > 1)
          + f" | {largest} vs 60 |")
    print("|---|" + "---:|" * (len(sizes))) 
    for name in MODES:
        peaks = [runs[(s, name)]["per_worker_peak_mib"] for s in sizes if s > 1]
        print(f"| {name} | " + " | ".join(f"{p:.0f} MiB" for p in peaks) + f" | {peaks[-1] / peaks[0]:.2f} |")


if __name__ == "__main__":
    main()
