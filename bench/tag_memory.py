"""How a tag worker's memory moves during a run: its RSS every 3 s (issue 15's diagnosis).

    .venv/bin/python bench/tag_memory.py [--copies 17] [--model musicnn-msd] [-- extra cattag tag flags]

`cattag tag` on --copies x the 60 GTZAN-dev clips (symlinks with distinct names) with DirectRunner's
2 worker processes; a thread samples VmRSS of every SDK worker process every 3 s and prints the
timeline (about 25 rows) and the largest value. A worker whose memory follows the number of tracks
it has tagged climbs through the whole run; a flat one levels off once the model is loaded.
Flags after `--` go to `cattag tag` (for example `--inference-batch-size 64`).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import subprocess
import sys
import tempfile
import threading
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from featurize_bench import make_catalogue  # noqa: E402


def worker_rss_mib() -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if b"sdk_worker" not in pathlib.Path(f"/proc/{pid}/cmdline").read_bytes():
                continue
            for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    found.append(int(line.split()[1]) // 1024)
        except OSError:
            continue
    return sorted(found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=17)
    parser.add_argument("--model", default="musicnn-msd")
    args, extra = parser.parse_known_args()
    extra = [flag for flag in extra if flag != "--"]
    work = pathlib.Path(tempfile.mkdtemp(prefix="cattag-tag-memory-"))
    paths = make_catalogue(work / "catalogue", args.copies)
    timeline: list[tuple[float, list[int]]] = []
    stop = threading.Event()

    def sample() -> None:
        started = time.monotonic()
        while not stop.wait(3.0):
            rss = worker_rss_mib()
            if rss:
                timeline.append((time.monotonic() - started, rss))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "pipelines.cli", "tag", "--input", str(work / "catalogue"),
                           "--output", str(work / "out"), "--progress", "off", "--model", args.model,
                           "--direct_num_workers", "2", "--direct_running_mode", "multi_processing", *extra],
                          capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    stop.set()
    sampler.join()
    if done.returncode:
        raise SystemExit(f"cattag tag failed:\n{done.stderr[-3000:]}")
    print(f"{len(paths)} tracks in {time.monotonic() - started:.0f} s; worker RSS MiB every 3 s (time s: workers):")
    for seconds, rss in timeline[:: max(1, len(timeline) // 25)]:
        print(f"  {seconds:5.0f}: {rss}")
    print(f"largest: {max((max(rss) for _, rss in timeline), default=0)} MiB")


if __name__ == "__main__":
    main()
