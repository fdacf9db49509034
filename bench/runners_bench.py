"""The same featurize (and tag) job on each runner cattag supports here: throughput and fixed start-up cost.

    .venv/bin/python bench/runners_bench.py [--copies 10] [--flink-jar JAR] [--only NAME] [--command tag] [--extra-flags "..."]

Each configuration runs `cattag featurize` as a user would (a fresh process: interpreter start,
imports, listing, job submission, the job, metadata) twice, on the same files: a one-clip catalogue,
whose wall time is the fixed start-up cost, and --copies x the 60 GTZAN-dev clips (symlinks with
distinct names, bench/featurize_bench.py's catalogue), whose extra tracks over the extra time give the
throughput, compared with a bare librosa load-and-mel loop over the same files in one process (the
featurize benchmark's baseline). Configurations:
  * DirectRunner, 1 worker (in-process) and 2 workers (multi_processing);
  * PortableRunner on the embedded job service, SDK worker in-process (LOOPBACK), and through a Python
    worker pool over EXTERNAL (`--direct_num_workers 2`), the way Flink clusters run Python workers;
  * FlinkRunner on an embedded cluster (`--flink_master [local]`, parallelism 1 and 2) and on local
    session clusters (`cattag flink-cluster start`: 1 TaskManager x 2 slots at parallelism 1 and 2, and
    2 TaskManagers x 1 slot at parallelism 2; SDK workers started by the TaskManagers, cattag's default
    there), only with --flink-jar (`make flink-job-server`).
On a session cluster the one-clip job runs twice: right after the cluster starts (its JVMs cold, no job run
yet) and again (a cluster that has run a job, as a team's long-running one has); the second is the start-up
figure. `--command tag` times `cattag tag --model musicnn-msd` instead (the bare loop stays featurize's).
"""

from __future__ import annotations

import argparse
import os
import shlex
import pathlib
import socket
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

from featurize_bench import GTZAN, bare_loop, make_catalogue

from runners import flink_cluster

PORTABLE = ["--runner", "PortableRunner", "--job_endpoint", "embed"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def featurize(catalogue: pathlib.Path, output: pathlib.Path, flags: list[str], command: str = "featurize") -> float:
    """Wall seconds of one `cattag featurize` (or `cattag tag` with the pretrained tagger)."""
    started = time.perf_counter()
    what = ["--labels", "from-dirs"] if command == "featurize" else ["--model", "musicnn-msd"]
    done = subprocess.run([sys.executable, "-m", "pipelines.cli", command, "--input", str(catalogue), *what,
                           "--output", str(output), "--overwrite", "--progress", "off", *flags],
                          capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    if done.returncode:
        raise SystemExit(f"{command} {' '.join(flags)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=10)
    parser.add_argument("--flink-jar", help="Beam's Flink job-server jar (make flink-job-server)")
    parser.add_argument("--only", help="run only the configurations whose name contains this, or one of these "
                                           "comma-separated parts (e.g. 'DirectRunner,2 TM')")
    parser.add_argument("--command", choices=("featurize", "tag"), default="featurize")
    parser.add_argument("--extra-flags", default="", help="flags added to every configuration's command "
                                                          "(e.g. '--inference-threads 1')")
    args = parser.parse_args()

    work = pathlib.Path(tempfile.mkdtemp(prefix="cattag-runners-"))
    big = work / "big"
    paths = make_catalogue(big, args.copies)
    tracks = len(paths)
    bare = bare_loop(paths)
    bare_rate = tracks / bare["wall_s"]
    print(f"bare librosa loop: {tracks} tracks in {bare['wall_s']:.1f} s ({bare_rate:.1f} tracks/s)", flush=True)
    small = work / "small" / "blues"
    small.mkdir(parents=True)
    (small / "one.flac").symlink_to(min(GTZAN.glob("blues/*.flac")))

    port = free_port()
    env = {**os.environ, "PATH": f"{pathlib.Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(REPO)}
    pool_log = open(work / "pool.log", "wb")  # noqa: SIM115 (open for the pool's lifetime)
    pool = subprocess.Popen([sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main",
                             f"--service_port={port}"], env=env, stdout=pool_log, stderr=subprocess.STDOUT)
    time.sleep(3)
    configs = {
        "DirectRunner, 1 worker": [],
        "DirectRunner, 2 workers (multi_processing)": ["--direct_num_workers", "2", "--direct_running_mode",
                                                       "multi_processing"],
        "PortableRunner embed, LOOPBACK": PORTABLE,
        "PortableRunner embed, worker pool (EXTERNAL)": [*PORTABLE, "--environment_type", "EXTERNAL",
                                                         "--environment_config", f"localhost:{port}",
                                                         "--direct_num_workers", "2"],
    }
    cluster_dir, cluster_port = work / "flink-cluster", free_port()
    shapes = {}  # configuration -> (TaskManagers, slots) of the session cluster it runs on
    if args.flink_jar:
        flink = ["--runner", "FlinkRunner", "--flink_job_server_jar", args.flink_jar, "--flink_version", "1.19",
                 f"--job_server_jvm_properties=-Djava.io.tmpdir={work}"]
        # Session clusters (started before their first job: their own start-up is in no job's time). SDK
        # workers as cattag runs them there by default: each TaskManager starts its own (PROCESS,
        # cattag-sdk-worker), one per slot, kept for the whole job.
        for taskmanagers, slots, parallelism in ((1, 2, 1), (1, 2, 2), (2, 1, 2)):
            name = f"FlinkRunner session cluster {taskmanagers} TM x {slots} slots, parallelism {parallelism}"
            configs[name] = [*flink, "--flink_master", f"localhost:{cluster_port}", "--parallelism", str(parallelism)]
            shapes[name] = (taskmanagers, slots)
        for parallelism in (1, 2):
            configs[f"FlinkRunner [local], parallelism {parallelism}"] = [
                *flink, "--flink_master", "[local]", "--environment_type", "LOOPBACK", "--parallelism", str(parallelism)]
    configs = {name: [*flags, *shlex.split(args.extra_flags)] for name, flags in configs.items()}
    if args.only:
        configs = {name: flags for name, flags in configs.items() if any(part in name for part in args.only.split(","))}
    rows, running_shape = [], None
    try:
        for name, flags in configs.items():
            started_workers = (work / "pool.log").read_bytes().count(b"Starting worker")
            first_s = None
            try:
                if name in shapes and running_shape != shapes[name]:
                    flink_cluster.stop(cluster_dir)
                    flink_cluster.start(cluster_dir, jar=args.flink_jar, taskmanagers=shapes[name][0],
                                        slots=shapes[name][1], rest_port=cluster_port)
                    running_shape = shapes[name]
                    first_s = featurize(small, work / "out-small", flags, args.command)  # the cluster's first job
                small_s = featurize(small, work / "out-small", flags, args.command)
                big_s = featurize(big, work / "out-big", flags, args.command)
            except SystemExit as failed:  # report it and go on with the other runners
                print(f"{name:<48} FAILED: {str(failed).strip().splitlines()[-1][:300]}", flush=True)
                continue
            workers = (work / "pool.log").read_bytes().count(b"Starting worker") - started_workers
            rows.append((name, small_s, big_s, (tracks - 1) / (big_s - small_s), workers, first_s))
            first = f" (the cluster's first job {first_s:.1f} s)" if first_s is not None else ""
            print(f"{name:<48} start-up {small_s:5.1f} s{first}  {tracks} tracks {big_s:6.1f} s  "
                  f"{rows[-1][3]:5.1f} tracks/s  pool workers started {workers}", flush=True)
    finally:
        pool.terminate()
        pool.wait()
        pool_log.close()
        if args.flink_jar:
            flink_cluster.stop(cluster_dir)
    base = rows[0][3] if rows and rows[0][0].startswith("DirectRunner, 1") else float("nan")
    print(f"\n`cattag {args.command}`\n")
    print(f"| runner | start-up s (1 clip) | cluster's first job s | {tracks} clips s | tracks/s after start-up "
          "| vs DirectRunner 1 worker | vs bare loop |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, small_s, big_s, rate, _, first_s in rows:
        first = f"{first_s:.1f}" if first_s is not None else ""
        print(f"| {name} | {small_s:.1f} | {first} | {big_s:.1f} | {rate:.1f} | {rate / base:.2f}x "
              f"| {rate / bare_rate:.2f}x |")


if __name__ == "__main__":
    main()
