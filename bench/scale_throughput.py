"""Featurize and tag through 10^3 and 10^4 real tracks: worker memory and throughput (issue 15).

    .venv/bin/python bench/scale_throughput.py [--copies 17 167] [--flink-jar JAR] [--model musicnn-msd]

For each catalogue (--copies x the 60 GTZAN-dev clips as symlinks with distinct names: 1020 and 10020
tracks of 30 s, 8.5 and 83.5 audio hours), `cattag featurize` and `cattag tag` run as a user runs
them, a fresh process each, on
  * DirectRunner with 2 worker processes (multi_processing);
  * FlinkRunner on a local session cluster (`cattag flink-cluster start`, one TaskManager with two
    slots) at parallelism 2, Python workers from a worker pool over EXTERNAL (one per slot), the
    way Flink clusters run them; only with --flink-jar (`make flink-job-server`).
Each also runs on a one-clip catalogue first: its wall time is the fixed start-up, and throughput is
(tracks - 1) / (wall - start-up). Worker memory is the largest RSS (VmRSS, sampled every 0.5 s)
of any process running Beam SDK workers during the run: `sdk_worker_main` processes, or the worker
pool (`worker_pool_main`), which runs its SDK harnesses in its own process and outlives each job (so
its high-water mark would carry over from one job to the next; the RSS sampled during the job does not). The tag model defaults to the pretrained tagger (musicnn-msd, no training): the backbone
every default model runs.
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
sys.path.insert(0, str(REPO))

from featurize_bench import GTZAN, make_catalogue  # noqa: E402
from runners_bench import free_port  # noqa: E402

from runners import flink_cluster  # noqa: E402


class WorkerPeaks:
    """The largest VmRSS of any SDK worker process seen while running, sampled in a thread."""

    def __init__(self):
        self.peaks: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *_):
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(0.5):
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    command = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes()
                    if b"sdk_worker" not in command and b"worker_pool_main" not in command:
                        continue
                    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
                        if line.startswith("VmRSS:"):
                            self.peaks[int(pid)] = max(self.peaks.get(int(pid), 0), int(line.split()[1]))
                except OSError:
                    continue

    @property
    def largest_mib(self) -> float:
        return max(self.peaks.values(), default=0) / 1024


def cattag(command: str, catalogue: pathlib.Path, output: pathlib.Path, flags: list[str], env) -> tuple[float, float]:
    """(wall s, largest worker peak MiB) of one `cattag featurize` or `cattag tag`."""
    started = time.perf_counter()
    with WorkerPeaks() as peaks:
        done = subprocess.run([sys.executable, "-m", "pipelines.cli", command, "--input", str(catalogue),
                               "--output", str(output), "--overwrite", "--progress", "off", *flags],
                              capture_output=True, text=True, cwd=REPO, env=env)
    if done.returncode:
        raise SystemExit(f"{command} {' '.join(flags)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - started, peaks.largest_mib


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, nargs="+", default=[17, 167])
    parser.add_argument("--flink-jar", help="Beam's Flink job-server jar (make flink-job-server)")
    parser.add_argument("--model", default="musicnn-msd")
    parser.add_argument("--jobs", nargs="+", default=["featurize", "tag"])
    parser.add_argument("--runners", nargs="+", choices=["direct", "flink"], default=["direct", "flink"],
                        help="which runners (flink only with --flink-jar)")
    args = parser.parse_args()

    work = pathlib.Path(tempfile.mkdtemp(prefix="cattag-scale-"))
    small = work / "small" / "blues"
    small.mkdir(parents=True)
    (small / "one.flac").symlink_to(min(GTZAN.glob("blues/*.flac")))
    catalogues = {copies: make_catalogue(work / f"catalogue-{copies}", copies) for copies in args.copies}
    for source in GTZAN.glob("*/*.flac"):
        source.read_bytes()
    env = {**os.environ, "PATH": f"{pathlib.Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    runners = {"DirectRunner, 2 processes": ["--direct_num_workers", "2", "--direct_running_mode", "multi_processing"]}
    if "direct" not in args.runners:
        runners.clear()
    pool = None
    cluster_dir, cluster_port, pool_port = work / "flink-cluster", free_port(), free_port()
    if args.flink_jar and "flink" in args.runners:
        pool = subprocess.Popen([sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main",
                                 f"--service_port={pool_port}"], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        flink_cluster.start(cluster_dir, jar=args.flink_jar, taskmanagers=1, slots=2, rest_port=cluster_port)
        runners["Flink session cluster, parallelism 2"] = [
            "--runner", "FlinkRunner", "--flink_master", f"localhost:{cluster_port}", "--flink_job_server_jar",
            args.flink_jar, "--flink_version", "1.19", "--environment_type", "EXTERNAL", "--environment_config",
            f"localhost:{pool_port}", "--sdk_worker_parallelism", "2", "--parallelism", "2",
            f"--job_server_jvm_properties=-Djava.io.tmpdir={work}"]
    rows = []
    try:
        for runner, flags in runners.items():
            for job in args.jobs:
                job_flags = [*flags, *(["--model", args.model] if job == "tag" else ["--labels", "from-dirs"])]
                startup, _ = cattag(job, small.parent, work / "out-small", job_flags, env)
                for copies, paths in catalogues.items():
                    wall, peak = cattag(job, work / f"catalogue-{copies}", work / f"out-{copies}", job_flags, env)
                    rate = (len(paths) - 1) / (wall - startup)
                    rows.append((job, runner, len(paths), startup, wall, rate, rate * 30.0, peak))
                    print(f"{job:<9} {runner:<40} {len(paths):>6} tracks  start-up {startup:5.1f} s  wall "
                          f"{wall:7.1f} s  {rate:6.2f} tracks/s  worker peak {peak:5.0f} MiB", flush=True)
    finally:
        if pool is not None:
            pool.terminate()
            pool.wait()
            flink_cluster.stop(cluster_dir)
    print("\n| job | runner | tracks | start-up s | wall s | tracks/s after start-up | worker peak RSS MiB |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for job, runner, tracks, startup, wall, rate, _, peak in rows:
        print(f"| {job} | {runner} | {tracks} | {startup:.1f} | {wall:.1f} | {rate:.2f} | {peak:.0f} |")


if __name__ == "__main__":
    main()
