"""The launching process of `cattag tag` as the catalogue grows (issue 15): memory and time to submit.

    .venv/bin/python bench/scale_bench.py [--sizes 10000,100000,1000000] [--format parquet] [--keep]

What it measures: for each size, a manifest of that many entries (bench/make_catalogue.py: distinct
track ids over the 60 GTZAN-dev clips; Parquet by default) is tagged with `cattag tag --model
musicnn-msd` on a runner whose launching process is not where the work runs: Beam's standalone job
service (`apache_beam.runners.portability.local_job_service_main`, its own process) with SDK workers
from a Python worker pool (`worker_pool_main`, EXTERNAL environment), the way a Flink or Dataflow
launch separates the two. The launcher is started as a user would start it:

    python -m pipelines.cli tag --input MANIFEST --model musicnn-msd --output OUT --progress off \\
        --runner PortableRunner --job_endpoint localhost:JOBPORT --environment_type EXTERNAL \\
        --environment_config localhost:POOLPORT

and timed from its start until the job service reports the job RUNNING (read through Beam's Job API:
GetJobs, then the job's state history with its timestamps; "prepared" is when the job service received
the pipeline, before artifact staging and Run). Its peak resident memory is the kernel's high-water
mark (VmHWM in /proc/PID/status), read until the job runs. Then the job is cancelled, the launcher's
process group killed and the job service and worker pool (with the workers they started) stopped: no
track is tagged to the end, and each size starts on fresh services. Nothing is left running at the end.

Target (issue 15): at 10^6 entries both figures within 1.2x of those at 10^4, i.e. the launcher
neither lists the catalogue into its own memory nor ships it inside the job graph.

The manifest's uris cycle over the pool's 60 paths, so its entries compress far better than a real
catalogue's; --distinct-uris points them at a tree of N distinct symlinks instead (make_catalogue), for
anything that ships entries around compressed (a pickled job graph does).

A benchmark, not a test: the test suite does not run it (with the catalogue listed in the launcher, as
before issue 15, 10^5 entries already took 393 MiB and 6.8 s against 244 MiB and 1.7 s for 10^3).
Needs musicnn-msd fetched (`cattag pretrained fetch musicnn-msd`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pathlib
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import grpc  # noqa: E402
import make_catalogue  # noqa: E402
from apache_beam.portability.api import beam_job_api_pb2, beam_job_api_pb2_grpc  # noqa: E402

PYTHON = REPO / ".venv" / "bin" / "python"
PYTHON = PYTHON if PYTHON.exists() else pathlib.Path(sys.executable)
State = beam_job_api_pb2.JobState
WAITING = (State.UNSPECIFIED, State.STOPPED, State.STARTING)
TARGET = 1.2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def environment() -> dict[str, str]:
    return {**os.environ, "PATH": f"{PYTHON.parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}


def vm_kib(pid: int, field: str = "VmHWM") -> int:
    """A /proc/PID/status memory figure in KiB (0 once the process is gone)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def in_sessions(sessions: set[int]) -> list[int]:
    """Live processes whose session is one of `sessions` (each started with start_new_session)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if fields[0] != "Z" and int(fields[3]) in sessions:  # fields after "(comm)": state, ppid, pgrp, session
            found.append(int(entry))
    return found


def stop_group(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """SIGTERM to proc's process group, SIGKILL to what is left of its session after `grace` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        deadline = time.monotonic() + grace
        while in_sessions({proc.pid}) and time.monotonic() < deadline:
            proc.poll()  # reaps it once it has exited
            time.sleep(0.1)
        if not in_sessions({proc.pid}):
            break
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)


class Services:
    """Beam's standalone job service and a Python worker pool, each in its own session."""

    def __init__(self, folder: pathlib.Path):
        folder.mkdir(parents=True, exist_ok=True)
        self.job_port, self.pool_port = free_port(), free_port()
        env = environment()
        self.procs: list[subprocess.Popen] = []
        self.logs = []
        for name, argv in (
            ("jobservice", ["-m", "apache_beam.runners.portability.local_job_service_main",
                            "--port", str(self.job_port), "--staging_dir", str(folder / "staging")]),
            ("pool", ["-m", "apache_beam.runners.worker.worker_pool_main", f"--service_port={self.pool_port}"]),
        ):
            log = open(folder / f"{name}.log", "wb")  # noqa: SIM115 (open for the service's lifetime)
            self.logs.append(log)
            self.procs.append(subprocess.Popen([str(PYTHON), *argv], cwd=REPO, env=env, stdout=log,
                                               stderr=subprocess.STDOUT, start_new_session=True))
        self.channel = grpc.insecure_channel(f"localhost:{self.job_port}")
        self.stub = beam_job_api_pb2_grpc.JobServiceStub(self.channel)
        try:
            grpc.channel_ready_future(self.channel).result(timeout=60)
            deadline = time.monotonic() + 60
            while True:
                with contextlib.suppress(OSError), socket.create_connection(("localhost", self.pool_port), 1):
                    break
                if time.monotonic() > deadline or self.procs[1].poll() is not None:
                    raise RuntimeError(f"the worker pool did not start: see {folder / 'pool.log'}")
                time.sleep(0.1)
        except BaseException:
            self.stop()
            raise

    @property
    def job_service_pid(self) -> int:
        return self.procs[0].pid

    def cancel_all(self) -> None:
        with contextlib.suppress(grpc.RpcError):
            for job in self.stub.GetJobs(beam_job_api_pb2.GetJobsRequest(), timeout=10).job_info:
                with contextlib.suppress(grpc.RpcError):
                    self.stub.Cancel(beam_job_api_pb2.CancelJobRequest(job_id=job.job_id), timeout=10)

    def stop(self) -> None:
        self.channel.close()
        for proc in self.procs:
            stop_group(proc)
        for log in self.logs:
            log.close()


def seconds(ts) -> float:
    return ts.seconds + ts.nanos / 1e9


def launcher_command(manifest: pathlib.Path, output: pathlib.Path, model: str, job_port, pool_port) -> list[str]:
    return [str(PYTHON), "-m", "pipelines.cli", "tag", "--input", str(manifest), "--model", model,
            "--output", str(output), "--progress", "off", "--runner", "PortableRunner",
            "--job_endpoint", f"localhost:{job_port}", "--environment_type", "EXTERNAL",
            "--environment_config", f"localhost:{pool_port}"]


def measure(manifest: pathlib.Path, folder: pathlib.Path, model: str, timeout: float) -> dict:
    """One launch on fresh services: seconds to job prepared and RUNNING, launcher peak RSS."""
    services = Services(folder)
    launcher = None
    sessions = {p.pid for p in services.procs}
    try:
        cmd = launcher_command(manifest, folder / "tags", model, services.job_port, services.pool_port)
        log = folder / "launcher.log"
        with open(log, "wb") as out:
            started_wall, started = time.time(), time.monotonic()
            launcher = subprocess.Popen(cmd, cwd=REPO, env=environment(), stdout=out, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        sessions.add(launcher.pid)
        hwm = service_hwm = 0
        while True:
            hwm = max(hwm, vm_kib(launcher.pid))
            service_hwm = max(service_hwm, vm_kib(services.job_service_pid))
            if launcher.poll() is not None:
                tail = log.read_text(errors="replace")[-2500:]
                raise RuntimeError(f"the launcher ended (exit {launcher.returncode}) before its job ran:\n{tail}")
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"no job RUNNING after {timeout:.0f} s (see {log})")
            try:
                jobs = services.stub.GetJobs(beam_job_api_pb2.GetJobsRequest(), timeout=30).job_info
            except grpc.RpcError as err:  # a job service busy receiving a large pipeline may answer late
                if err.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise
                continue
            if jobs and jobs[0].state not in WAITING:
                # Its state history, with the job service's timestamps: exact, whatever the polling period.
                history = {}
                for event in services.stub.GetStateStream(
                        beam_job_api_pb2.GetJobStateRequest(job_id=jobs[0].job_id), timeout=10):
                    history.setdefault(event.state, seconds(event.timestamp))
                    if event.state not in WAITING:
                        break
                hwm = max(hwm, vm_kib(launcher.pid))
                if State.RUNNING not in history:
                    raise RuntimeError(f"the job went to {State.Name(jobs[0].state)} without running "
                                       f"(see {folder / 'jobservice.log'})")
                return {"running_s": history[State.RUNNING] - started_wall,
                        "prepared_s": history.get(State.STOPPED, float("nan")) - started_wall,
                        "rss_mib": hwm / 1024, "service_rss_mib": service_hwm / 1024,
                        "cmd": cmd}
            time.sleep(0.1)
    finally:
        services.cancel_all()
        if launcher is not None:
            stop_group(launcher)
        services.stop()
        left = in_sessions(sessions)
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if left:
            print(f"  warning: killed {len(left)} leftover processes {left}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000,1000000", help="catalogue entries, comma-separated")
    parser.add_argument("--format", choices=make_catalogue.FORMATS, default="parquet", help="manifest format")
    parser.add_argument("--model", default="musicnn-msd")
    parser.add_argument("--pool", help=f"a folder of GENRE/*.flac clips the entries cycle over (default "
                                       f"{make_catalogue.GTZAN})")
    parser.add_argument("--distinct-uris", action="store_true",
                        help="make a tree of N symlinks (make_catalogue tree) and point the manifest's uris at it, "
                             "so no two entries share a uri, as in a real catalogue (10^6: about a minute, 10^6 inodes)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="launches per size: the median time and the largest peak RSS are reported")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds a launch may take to get its job running")
    parser.add_argument("--workdir", help="default: a new temporary folder (one that existed is never removed)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (manifests, logs)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]

    # SIGTERM (or a closed terminal) runs the clean-up in finally blocks, as Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGHUP, lambda *_: sys.exit(129))
    print("command: " + shlex.join([str(PYTHON.relative_to(REPO)) if PYTHON.is_relative_to(REPO) else str(PYTHON),
                                    *sys.argv]), flush=True)
    print("launcher: cd " + str(REPO) + " && PYTHONPATH=" + str(REPO) + " " + shlex.join(
        launcher_command(pathlib.Path("MANIFEST"), pathlib.Path("OUT"), args.model, "JOBPORT", "POOLPORT")), flush=True)
    work = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix="cattag-scale-")).absolute()
    ours = not args.workdir or not work.exists()
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        # Warm the page cache with the launcher's imports, so the first size does not pay for a cold disk.
        subprocess.run([str(PYTHON), "-m", "pipelines.cli", "tag", "--help"], cwd=REPO, env=environment(),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        for n in sizes:
            made = time.perf_counter()
            tree = None
            if args.distinct_uris:
                tree = make_catalogue.tree(work / f"tree-{n}", n, args.pool)
            manifest = make_catalogue.manifest(work / f"manifest-{n}.{args.format}", n, args.pool, args.format,
                                               tree_root=tree)
            made = time.perf_counter() - made
            runs = []
            for attempt in range(args.repeat):
                try:
                    result = measure(manifest, work / f"n{n}-{attempt}", args.model, args.timeout)
                except RuntimeError as failed:  # say so and go on with the other sizes
                    print(f"{n:>9} entries: FAILED: {failed}", flush=True)
                    continue
                runs.append(result)
                print(f"{n:>9} entries: manifest {manifest.stat().st_size / 2**20:.1f} MiB (made in {made:.1f} s); "
                      f"launcher peak RSS {result['rss_mib']:.0f} MiB; job prepared at {result['prepared_s']:.1f} s, "
                      f"RUNNING at {result['running_s']:.1f} s; job service peak RSS "
                      f"{result['service_rss_mib']:.0f} MiB", flush=True)
            if tree is not None and not args.keep:
                shutil.rmtree(tree, ignore_errors=True)
            if not runs:
                continue
            rows.append((n, max(r["rss_mib"] for r in runs), statistics.median(r["prepared_s"] for r in runs),
                         statistics.median(r["running_s"] for r in runs)))
    finally:
        if args.keep or not ours:
            print(f"work folder kept: {work}", flush=True)
        else:
            shutil.rmtree(work, ignore_errors=True)

    print("\n| entries | launcher peak RSS MiB | s to job prepared | s to job RUNNING |")
    print("|---:|---:|---:|---:|")
    for n, rss, prepared, running in rows:
        print(f"| {n:,} | {rss:.0f} | {prepared:.1f} | {running:.1f} |")
    if len(rows) > 1:
        (n0, rss0, prep0, run0), (n1, rss1, prep1, run1) = rows[0], rows[-1]
        print(f"| {n1:,} / {n0:,} | {rss1 / rss0:.2f}x | {prep1 / prep0:.2f}x | {run1 / run0:.2f}x |")
        ok = rss1 / rss0 <= TARGET and run1 / run0 <= TARGET
        print(f"\ntarget (issue 15): the largest within {TARGET}x of the smallest for peak RSS and time to RUNNING: "
              f"{'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
