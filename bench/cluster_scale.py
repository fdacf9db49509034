"""How ClusterCopies (transforms/duplicate_steps.py) scales: generated fingerprints, 10^4 to 10^6 tracks.

    .venv/bin/python bench/cluster_scale.py [--sizes 10000,100000,1000000] [--words 240] [--copies 0.1]

Each size runs in its own process (so that its peak memory is its own) on the DirectRunner, in one
process (`--direct_num_workers 1`: the in-memory runner; a cluster spreads the same shards over workers).
The fingerprints are generated inside the pipeline, a block of 10,000 tracks per element, so that the job
reads no input: `--words` random 32-bit words per track (240: a 30 s preview; 970: the 120 s cap), and a
share `--copies` of the tracks are copies of another track as the variants make them: cut at either end
by up to 5 s (40 words), 30% of the words replaced (re-encoding changes whole words where the spectrum
is quiet) and 3% of the bits of the rest flipped. Reports wall time, peak RSS, and the copies found
against the planted ones (recall, and any false merge).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

BLOCK = 10_000


def generated(block: int, *, words: int, copies: float, seed: int = 7):
    """Block `block` of the generated catalogue -> (track id, words) of its tracks. A copy's id names its
    original: "b<block>-t<i>~copy-of-t<j>", the original in the same block."""
    rng = np.random.default_rng([seed, block])
    originals = rng.integers(0, 2**32, (BLOCK, words), dtype=np.uint64).astype(np.uint32)
    is_copy = rng.random(BLOCK) < copies
    out = []
    for i in range(BLOCK):
        if not is_copy[i] or i == 0:
            out.append((f"b{block}-t{i}", originals[i]))
            continue
        j = int(rng.integers(0, i))
        while is_copy[j] and j > 0:
            j = int(rng.integers(0, i))
        head, tail = rng.integers(0, 41, 2)
        copy = originals[j][head:words - tail].copy()
        replaced = rng.random(len(copy)) < 0.3
        copy[replaced] = rng.integers(0, 2**32, int(replaced.sum()), dtype=np.uint64).astype(np.uint32)
        flips = (rng.random((len(copy), 32)) < 0.03) * (np.uint64(1) << np.arange(32, dtype=np.uint64))
        copy ^= flips.sum(axis=1).astype(np.uint32)
        out.append((f"b{block}-t{i}~copy-of-t{j}", copy))
    return out


def original_of(track: str) -> str:
    """The generated recording a track id is a take of: its original's id."""
    if "~" not in track:
        return track
    return track.split("-t")[0] + "-t" + track.split("copy-of-t")[1]


def run_one(size: int, words: int, copies: float) -> dict:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from transforms.duplicate_steps import ClusterCopies

    result_path = f"/tmp/cluster-scale-{os.getpid()}.json"
    options = PipelineOptions(["--runner", "DirectRunner", "--direct_num_workers", "1"])
    started = time.monotonic()
    with beam.Pipeline(options=options) as pipeline:
        _ = (pipeline
             | beam.Create(range(max(1, size // BLOCK)))
             | "Generate" >> beam.FlatMap(generated, words=words, copies=copies)
             | ClusterCopies()
             | beam.Map(lambda clusters: open(result_path, "w").write(json.dumps(clusters))))
    wall = time.monotonic() - started
    with open(result_path) as handle:
        clusters = json.load(handle)
    os.remove(result_path)
    planted = found = 0
    by_recording: dict[str, set[str]] = {}
    for track, recording in clusters.items():
        by_recording.setdefault(recording, set()).add(track)
    # A cluster holding more than one planted recording is a false merge.
    false_merges = sum(len({original_of(track) for track in members}) - 1 for members in by_recording.values())
    for block in range(max(1, size // BLOCK)):
        for track, _ in generated(block, words=words, copies=copies):
            if "~" in track:
                planted += 1
                found += clusters.get(track) is not None and clusters.get(track) == clusters.get(original_of(track))
    return {"tracks": max(1, size // BLOCK) * BLOCK, "words": words, "wall_s": round(wall, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "planted_copies": planted, "found": found, "recall": round(found / max(planted, 1), 4),
            "false_merges": false_merges}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--words", type=int, default=240)
    parser.add_argument("--copies", type=float, default=0.1)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a child process: one size
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.words, args.copies)))
        return
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        done = subprocess.run([sys.executable, __file__, "--one", str(size), "--words", str(args.words),
                               "--copies", str(args.copies)], capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    print("\n| tracks | words each | wall s | peak RSS MB | planted copies | recall | false merges |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        print(f"| {row['tracks']:,} | {row['words']} | {row['wall_s']} | {row['peak_rss_mb']:,} | "
              f"{row['planted_copies']:,} | {row['recall']:.4f} | {row['false_merges']} |")


if __name__ == "__main__":
    main()
