"""A local Flink session cluster (one JobManager, N TaskManagers, all on loopback) from the job server's jars.

`make flink-job-server` caches Beam's Flink job server as a thin jar plus `lib/` (162 jars, all of Flink 1.19's
runtime among them). Flink's distribution tarball is not served here, so this module does what its
bin/jobmanager.sh and bin/taskmanager.sh do, with `java -cp 'lib/*'` instead of flink-dist:

- `org.apache.flink.runtime.util.bash.BashJavaUtils GET_JM_RESOURCE_PARAMS|GET_TM_RESOURCE_PARAMS --configDir
  CONF` derives each process's memory from the config and prints two lines prefixed
  `BASH_JAVA_UTILS_EXEC_RESULT:`: the JVM flags (-Xmx, -Xms, -XX:MaxDirectMemorySize, -XX:MaxMetaspaceSize),
  then the dynamic configs (`-D key=value ...`) that go after `--configDir CONF` on the entry point's command
  line (bash-java-utils.sh, extractExecutionResults; taskmanager.sh);
- `org.apache.flink.runtime.entrypoint.StandaloneSessionClusterEntrypoint` is the JobManager (with REST and
  the web UI), `org.apache.flink.runtime.taskexecutor.TaskManagerRunner` each TaskManager (flink-daemon.sh),
  both with the Java 17 `--add-opens`/`--add-exports` flags that Flink's config.yaml sets in env.java.opts.all.

Work directory layout (default ~/.cache/cattag/flink-cluster):

    conf/config.yaml     the cluster's Flink config: every address and bind host on 127.0.0.1, ports, slots
    log/jobmanager.log   the JobManager's stdout and stderr (Beam's lib/ logs through slf4j-simple)
    log/taskmanager-N.log
    log/job-server.log   the cluster's Beam job server (see below)
    tmp/                 io.tmp.dirs and every JVM's java.io.tmpdir (blobs, web uploads, spill files)
    cluster.json         pids (with their start times, against pid reuse), ports, jar: what stop and status read

`start` refuses a REST port that something already listens on (one-line ValueError naming it), starts the
processes in their own sessions (they outlive `cattag flink-cluster start`) and returns once GET /overview
reports the wanted TaskManagers and slots. `stop` sends SIGTERM to the recorded pids, waits, then SIGKILLs
what is left. Jobs: `--runner FlinkRunner --flink_master localhost:PORT --flink_job_server_jar JAR
--flink_version 1.19`; each TaskManager then starts its own SDK workers (runners/sdk_worker.py, Beam's PROCESS
environment, slots-many per TaskManager), as on a real cluster.

The cluster comes with its own Beam job server, started beside it from the same jar (job and artifact ports
on 127.0.0.1) and named in its configuration (JOB_ENDPOINT_KEY), with BEAM_ON_CLASS_PATH_KEY: a job sent to
the cluster goes through that job server, and uploads no jars (runners/pipeline.py reads both over REST).
Starting a job server per job, and uploading its 150 MB class path with every job, took 16 of the 20 s a
one-clip featurize needed to start (bench/RESULTS.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pathlib
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET

from runners.ports import HOST, free_port, listening

_LOG = logging.getLogger(__name__)
_ENDED = ("FINISHED", "CANCELED", "FAILED")  # a Flink job's terminal states

# The Maven recipe of the job server ships inside this package (package data, so an installed wheel has it
# too); $CATTAG_FLINK_POM names another one.
POM_ENV = "CATTAG_FLINK_POM"
BUNDLED_POM = pathlib.Path(__file__).resolve().parent / "flink-job-server" / "pom.xml"
DEFAULT_WORKDIR = pathlib.Path.home() / ".cache" / "cattag" / "flink-cluster"
RESULT_PREFIX = "BASH_JAVA_UTILS_EXEC_RESULT:"
BASH_JAVA_UTILS = "org.apache.flink.runtime.util.bash.BashJavaUtils"
# A key of cattag's in the cluster's configuration: its TaskManagers have the job server's lib/ (Beam, Flink's
# runner) on their class path, loaded parent first. Set it on a cluster of your own built that way too.
BEAM_ON_CLASS_PATH_KEY = "cattag.beam-on-class-path"
# Another: host:port of the Beam job server `cattag flink-cluster start` runs beside the cluster.
JOB_ENDPOINT_KEY = "cattag.job-endpoint"
JOB_SERVER_CLASS = "org.apache.beam.runners.flink.FlinkJobServerDriver"
JOBMANAGER_CLASS = "org.apache.flink.runtime.entrypoint.StandaloneSessionClusterEntrypoint"
TASKMANAGER_CLASS = "org.apache.flink.runtime.taskexecutor.TaskManagerRunner"
STATE_FILE = "cluster.json"
# Flink 1.19's config.yaml, env.java.opts.all: what its runtime needs on Java 17.
JAVA17_OPTS = (
    "--add-exports=java.base/sun.net.util=ALL-UNNAMED --add-exports=java.rmi/sun.rmi.registry=ALL-UNNAMED "
    "--add-exports=jdk.compiler/com.sun.tools.javac.api=ALL-UNNAMED "
    "--add-exports=jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED "
    "--add-exports=jdk.compiler/com.sun.tools.javac.parser=ALL-UNNAMED "
    "--add-exports=jdk.compiler/com.sun.tools.javac.tree=ALL-UNNAMED "
    "--add-exports=jdk.compiler/com.sun.tools.javac.util=ALL-UNNAMED "
    "--add-exports=java.security.jgss/sun.security.krb5=ALL-UNNAMED --add-opens=java.base/java.lang=ALL-UNNAMED "
    "--add-opens=java.base/java.net=ALL-UNNAMED --add-opens=java.base/java.io=ALL-UNNAMED "
    "--add-opens=java.base/java.nio=ALL-UNNAMED --add-opens=java.base/sun.nio.ch=ALL-UNNAMED "
    "--add-opens=java.base/java.lang.reflect=ALL-UNNAMED --add-opens=java.base/java.text=ALL-UNNAMED "
    "--add-opens=java.base/java.time=ALL-UNNAMED --add-opens=java.base/java.util=ALL-UNNAMED "
    "--add-opens=java.base/java.util.concurrent=ALL-UNNAMED "
    "--add-opens=java.base/java.util.concurrent.atomic=ALL-UNNAMED "
    "--add-opens=java.base/java.util.concurrent.locks=ALL-UNNAMED"
).split()
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0

# Popen objects of processes this interpreter started: kept so that stop() can reap them (no zombies, no
# "subprocess is still running" warnings) when start() and stop() run in one process, as in the tests.
_CHILDREN: dict[int, subprocess.Popen] = {}


class ClusterError(RuntimeError):
    """A cluster process died or never came up; the message names its log."""


# ---------------------------------------------------------------------------------------------- pure helpers


def job_server_pom(environ: os._Environ | dict | None = None) -> pathlib.Path:
    """The job server's Maven recipe: $CATTAG_FLINK_POM, else the one bundled with cattag."""
    environ = os.environ if environ is None else environ
    return pathlib.Path(environ[POM_ENV]) if environ.get(POM_ENV) else BUNDLED_POM


def default_jar(pom: pathlib.Path | None = None, environ: os._Environ | dict | None = None) -> pathlib.Path:
    """Where `make flink-job-server` puts the jar: the Makefile's FLINK_CACHE / FLINK_JAR, from the pom."""
    environ = os.environ if environ is None else environ
    pom = pom or job_server_pom(environ)
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    props = ET.parse(pom).getroot().find("m:properties", ns)
    beam, flink = props.find("m:beam.version", ns).text, props.find("m:flink.version", ns).text
    cache = environ.get("FLINK_CACHE") or str(pathlib.Path.home() / ".cache" / "cattag" / "flink" /
                                              f"beam-{beam}-flink-{flink}")
    return pathlib.Path(cache) / f"cattag-flink-job-server-{beam}-flink{flink}.jar"


def config_text(workdir: pathlib.Path, *, slots: int, rest_port: int, rpc_port: int, job_port: int | None = None,
                jobmanager_memory: str = "1024m") -> str:
    """conf/config.yaml (Flink 1.19 reads flat keys there too): loopback only, files under the work dir.

    Network buffers: Beam's batch translation keeps many blocking result partitions alive at once, and
    Flink's sort shuffle reserves taskmanager.network.sort-shuffle.min-buffers (512 x 32 KB) for each: featurize
    at --parallelism 2 failed with "Insufficient number of network buffers: required 512, but only 484
    available" under Flink's defaults (128 MB), and still with 512 MB. Hence 64 buffers a partition (Flink's
    documented minimum) and 256 MB of network memory a slot; TaskManager memory grows with its slots, and
    managed memory (sorting, hashing) is 30 % of Flink's memory, leaving room for heap."""
    tmp = workdir / "tmp"
    network_mb = 256 * slots
    settings = {
        "jobmanager.rpc.address": HOST,
        "jobmanager.rpc.port": rpc_port,
        "jobmanager.bind-host": HOST,
        "jobmanager.memory.process.size": jobmanager_memory,
        "jobmanager.execution.failover-strategy": "region",
        "taskmanager.host": HOST,
        "taskmanager.bind-host": HOST,
        "taskmanager.numberOfTaskSlots": slots,
        "taskmanager.memory.process.size": f"{1536 + 768 * slots}m",
        # Beam's Fn API data and control channels to the SDK workers are gRPC over Netty, which allocates
        # direct buffers; Flink caps direct memory at its own off-heap budgets, and with none for tasks
        # 600 tracks at parallelism 2 failed with "Direct buffer memory" or "call is closed".
        "taskmanager.memory.task.off-heap.size": "512m",
        "taskmanager.memory.network.min": f"{network_mb}m",
        "taskmanager.memory.network.max": f"{network_mb}m",
        "taskmanager.memory.managed.fraction": 0.3,
        "taskmanager.network.sort-shuffle.min-buffers": 64,
        # An error thrown in a thread Flink does not watch (Beam's gRPC threads: a heap OutOfMemoryError
        # there once left a job hanging) ends the process, so that the job fails instead of hanging.
        "cluster.uncaught-exception-handling": "FAIL",
        # Beam's runner classes from the TaskManager's own class path (it has the job server's lib/), not a
        # job's copy: Beam keeps a job's SDK workers from one stage to the next only when its stage context
        # comes from Flink's parent class loader (FlinkExecutableStageContextFactory); otherwise every batch
        # stage started and stopped its own SDK worker processes, 2-3 s each.
        "classloader.resolve-order": "parent-first",
        # Read back over REST by the launcher (beam_on_class_path): jobs then upload no jars to this cluster.
        BEAM_ON_CLASS_PATH_KEY: "true",
        "rest.address": HOST,
        "rest.bind-address": HOST,
        "rest.port": rest_port,
        "rest.bind-port": rest_port,
        "parallelism.default": 1,
        "io.tmp.dirs": str(tmp),
        "web.tmpdir": str(tmp),
        "blob.storage.directory": str(tmp / "blobs"),
    }
    if job_port is not None:
        settings[JOB_ENDPOINT_KEY] = f"{HOST}:{job_port}"
    lines = ["# Written by `cattag flink-cluster start` (runners/flink_cluster.py); rewritten on each start."]
    lines += [f"{key}: {json.dumps(value) if isinstance(value, str) else value}" for key, value in settings.items()]
    return "\n".join(lines) + "\n"


def parse_resource_params(output: str) -> tuple[list[str], list[str]]:
    """BashJavaUtils GET_*_RESOURCE_PARAMS output -> (JVM flags, dynamic configs), as bash-java-utils.sh does.

    Exactly two lines carry the prefix: the JVM parameters, then the `-D key=value` dynamic configs."""
    results = [line[line.index(RESULT_PREFIX) + len(RESULT_PREFIX):].strip()
               for line in output.splitlines() if RESULT_PREFIX in line]
    if len(results) != 2:
        raise ClusterError(f"BashJavaUtils printed {len(results)} {RESULT_PREFIX} lines, expected 2:\n{output}")
    return results[0].split(), results[1].split()


def bash_java_utils_command(lib: pathlib.Path, conf: pathlib.Path, command: str, java: str = "java") -> list[str]:
    return [java, "-cp", f"{lib}/*", BASH_JAVA_UTILS, command, "--configDir", str(conf)]


def jvm_command(jar: pathlib.Path, conf: pathlib.Path, tmp: pathlib.Path, log: pathlib.Path, main_class: str,
                jvm_params: list[str], dynamic_configs: list[str], java: str = "java") -> list[str]:
    """A JobManager or TaskManager command line, as flink-daemon.sh builds it. The job-server jar comes first
    on the class path: the one class it carries (Beam's gRPC ServerFactory, patched at build time to bind the
    address it is given) is what keeps each TaskManager's Fn API ports to its SDK workers on loopback."""
    lib = jar.parent / "lib"
    gc = ["-XX:+UseG1GC"] if main_class == TASKMANAGER_CLASS else []
    return [java, *jvm_params, *gc, *JAVA17_OPTS, f"-Djava.io.tmpdir={tmp}", f"-Dlog.file={log}",
            "-Dorg.slf4j.simpleLogger.showDateTime=true",
            "-Dorg.slf4j.simpleLogger.dateTimeFormat=yyyy-MM-dd HH:mm:ss,SSS",
            "-cp", f"{jar}:{lib}/*", main_class, "--configDir", str(conf), *dynamic_configs]


def job_server_command(jar: pathlib.Path, tmp: pathlib.Path, *, rest_port: int, job_port: int,
                       java: str = "java") -> list[str]:
    """The cluster's Beam job server: every port on loopback (--job-host; the jar's patched ServerFactory
    binds it), no expansion service, artifacts under the work dir."""
    return [java, f"-Djava.io.tmpdir={tmp}", "-cp", f"{jar}:{jar.parent / 'lib'}/*", JOB_SERVER_CLASS,
            "--flink-master", f"{HOST}:{rest_port}", "--job-host", HOST, "--job-port", str(job_port),
            "--artifact-port", "0", "--expansion-port", "-1", "--artifacts-dir", str(tmp / "artifacts")]


def port_in_use(port: int, host: str = HOST) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a TIME_WAIT leftover is no listener
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


# ----------------------------------------------------------------------------------------------- processes


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks (/proc/PID/stat field 22), None if it is gone or a zombie."""
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
    return None if fields[0] in ("Z", "X") else fields[19]


def _alive(pid: int, start_time: str | None) -> bool:
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        del _CHILDREN[pid]
        return False
    now = _start_time(pid)
    return now is not None and (start_time is None or now == start_time)


def _read_state(workdir: pathlib.Path) -> dict | None:
    try:
        return json.loads((workdir / STATE_FILE).read_text())
    except FileNotFoundError:
        return None


def _processes(state: dict) -> list[dict]:
    return [state["jobmanager"], *state["taskmanagers"], *([state["job_server"]] if "job_server" in state else [])]


def _overview(rest_port: int, timeout: float = 2.0) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{rest_port}/overview", timeout=timeout) as reply:
            return json.loads(reply.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


def rest_address(master: str | None) -> str | None:
    """host:port of a cluster's REST API from --flink_master (host:port or http://...); None for the embedded
    cluster ([local], [auto]) or none."""
    if not master or master.startswith("["):
        return None
    return master.split("://", 1)[-1].rstrip("/")


def _rest(master: str | None, path: str):
    """The JSON a cluster's REST API (`master`: host:port or http://...) answers at `path`; None when it does
    not answer, or for the embedded cluster ([local], [auto])."""
    address = rest_address(master)
    if address is None:
        return None
    try:
        with urllib.request.urlopen(f"http://{address}{path}", timeout=5) as reply:
            return json.loads(reply.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


def cancel_jobs_named(master: str | None, name: str, *, wait_s: float = 30.0) -> list[str]:
    """Cancels the jobs called `name` that still run on the cluster at `master` (REST: PATCH /jobs/ID) and
    waits up to `wait_s` for them to end; their ids. Beam's job server cancels a job it submitted to a
    cluster only while its own invocation of it lives: once Flink has restarted the job (a TaskManager
    lost), cancelling through Beam leaves it running."""
    address = rest_address(master)
    if address is None:
        return []
    cancelled = []
    for job in (_rest(master, "/jobs/overview") or {}).get("jobs", []):
        if job.get("name") == name and job.get("state") not in _ENDED:
            request = urllib.request.Request(f"http://{address}/jobs/{job['jid']}?mode=cancel", method="PATCH")
            try:
                urllib.request.urlopen(request, timeout=5).close()
                cancelled.append(job["jid"])
            except (urllib.error.URLError, OSError) as err:
                _LOG.warning("could not cancel Flink job %s (%s) at %s: %s", job["jid"], name, master, err)
    deadline = time.monotonic() + wait_s  # cancelling is asynchronous: wait for the slots to come back
    while cancelled and time.monotonic() < deadline:
        states = {job.get("jid"): job.get("state") for job in (_rest(master, "/jobs/overview") or {}).get("jobs", [])}
        if all(states.get(jid, "FINISHED") in _ENDED for jid in cancelled):
            break
        time.sleep(0.5)
    return cancelled


def slots_per_taskmanager(master: str | None) -> int | None:
    """Task slots per TaskManager of the cluster at `master`, from its /overview; None when it does not
    answer or has no TaskManager."""
    overview = _rest(master, "/overview") or {}
    taskmanagers = overview.get("taskmanagers") or 0
    return overview.get("slots-total", 0) // taskmanagers if taskmanagers else None


def cattag_settings(master: str | None) -> dict[str, str]:
    """The cattag.* keys of the configuration of the cluster at `master` (GET /jobmanager/config):
    BEAM_ON_CLASS_PATH_KEY, JOB_ENDPOINT_KEY; empty for a cluster cattag did not start, or none answering."""
    config = _rest(master, "/jobmanager/config") or []
    return {str(entry["key"]): str(entry.get("value")) for entry in config
            if isinstance(entry, dict) and str(entry.get("key", "")).startswith("cattag.")}


def _tail(path: pathlib.Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _resource_params(lib: pathlib.Path, conf: pathlib.Path, command: str) -> tuple[list[str], list[str]]:
    done = subprocess.run(bash_java_utils_command(lib, conf, command), capture_output=True, text=True)
    if done.returncode != 0:
        raise ClusterError(f"BashJavaUtils {command} failed:\n{done.stdout}{done.stderr}")
    return parse_resource_params(done.stdout + done.stderr)


def _launch(command: list[str], log: pathlib.Path) -> dict:
    with open(log, "ab") as sink:
        sink.write(f"$ {shlex.join(command)}\n".encode())
        sink.flush()
        # Own session: the cluster outlives `cattag flink-cluster start`, and Ctrl-C in that shell spares it.
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT,
                                   start_new_session=True, cwd=log.parent.parent)  # relative paths: work dir
    _CHILDREN[process.pid] = process
    return {"pid": process.pid, "start_time": _start_time(process.pid), "log": str(log)}


def start(workdir, *, jar, taskmanagers: int = 1, slots: int = 2, rest_port: int = 8081,
          timeout: float = START_TIMEOUT_S) -> dict:
    """Start a JobManager and `taskmanagers` TaskManagers of `slots` slots; return once REST shows them all."""
    workdir = pathlib.Path(workdir).expanduser().resolve()
    jar = pathlib.Path(jar).expanduser().resolve()
    lib = jar.parent / "lib"
    if taskmanagers < 1 or slots < 1:
        raise ValueError(f"need at least 1 TaskManager and 1 slot, got {taskmanagers} x {slots}")
    if not jar.is_file() or not lib.is_dir():
        raise ValueError(f"no Flink job server jar with a lib/ beside it at {jar}: run `make flink-job-server`")
    running = status(workdir)
    if running["running"]:
        raise ValueError(f"a Flink cluster from {workdir} is already running (REST port {running['rest_port']}, "
                         f"pids {running['pids']}): `cattag flink-cluster stop --workdir {workdir}` first")
    if port_in_use(rest_port):
        raise ValueError(f"port {rest_port} on {HOST} is already in use (another Flink cluster?): "
                         f"stop that or pick another with --port")
    conf, log_dir, tmp = workdir / "conf", workdir / "log", workdir / "tmp"
    for folder in (conf, log_dir, tmp):
        folder.mkdir(parents=True, exist_ok=True)
    rpc_port, job_port = free_port(), free_port()
    (conf / "config.yaml").write_text(config_text(workdir, slots=slots, rest_port=rest_port, rpc_port=rpc_port,
                                                  job_port=job_port))
    jm_jvm, jm_dynamic = _resource_params(lib, conf, "GET_JM_RESOURCE_PARAMS")
    tm_jvm, tm_dynamic = _resource_params(lib, conf, "GET_TM_RESOURCE_PARAMS")
    for old in log_dir.glob("*.log"):
        old.unlink()

    began = time.monotonic()
    state = {"workdir": str(workdir), "jar": str(jar), "rest_port": rest_port, "rpc_port": rpc_port,
             "job_port": job_port, "slots": slots, "taskmanagers": []}
    jm_log = log_dir / "jobmanager.log"
    state["jobmanager"] = _launch(jvm_command(jar, conf, tmp, jm_log, JOBMANAGER_CLASS, jm_jvm, jm_dynamic), jm_log)
    _write_state(workdir, state)
    # TaskManagers started before the JobManager's RPC port listens back off for ~10 s before retrying.
    deadline = began + timeout
    while not listening(rpc_port) and time.monotonic() < deadline:
        if not _alive(state["jobmanager"]["pid"], state["jobmanager"]["start_time"]):
            break  # reported below, with its log
        time.sleep(0.2)
    for index in range(taskmanagers):
        tm_log = log_dir / f"taskmanager-{index}.log"
        state["taskmanagers"].append(
            _launch(jvm_command(jar, conf, tmp, tm_log, TASKMANAGER_CLASS, tm_jvm, tm_dynamic), tm_log))
        _write_state(workdir, state)
    js_log = log_dir / "job-server.log"
    state["job_server"] = _launch(job_server_command(jar, tmp, rest_port=rest_port, job_port=job_port), js_log)
    _write_state(workdir, state)

    while True:
        dead = [proc for proc in _processes(state) if not _alive(proc["pid"], proc["start_time"])]
        if dead:
            stop(workdir)
            log = pathlib.Path(dead[0]["log"])
            raise ClusterError(f"Flink process {dead[0]['pid']} exited during start-up; {log}:\n{_tail(log)}")
        overview = _overview(rest_port)
        if (overview and overview.get("taskmanagers") == taskmanagers
                and overview.get("slots-total") == taskmanagers * slots and listening(job_port)):
            break
        if time.monotonic() > deadline:
            stop(workdir)
            raise ClusterError(f"the Flink cluster did not report {taskmanagers} TaskManager(s) x {slots} slots "
                               f"within {timeout:.0f} s (last /overview: {overview}); logs in {log_dir}")
        time.sleep(0.5)
    return {**status(workdir), "startup_s": round(time.monotonic() - began, 1)}


def _write_state(workdir: pathlib.Path, state: dict) -> None:
    partial = workdir / (STATE_FILE + ".tmp")
    partial.write_text(json.dumps(state, indent=2) + "\n")
    partial.replace(workdir / STATE_FILE)


def stop(workdir, timeout: float = STOP_TIMEOUT_S) -> dict:
    """SIGTERM the recorded TaskManagers and JobManager, wait for them (SIGKILL after `timeout`)."""
    workdir = pathlib.Path(workdir).expanduser().resolve()
    state = _read_state(workdir)
    if state is None:
        return {"workdir": str(workdir), "stopped": []}
    procs = [proc for proc in reversed(_processes(state)) if _alive(proc["pid"], proc["start_time"])]
    for proc in procs:  # TaskManagers first, so they do not log the JobManager's loss at length
        _signal(proc["pid"], signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(_alive(p["pid"], p["start_time"]) for p in procs) and time.monotonic() < deadline:
        time.sleep(0.2)
    for proc in procs:
        if _alive(proc["pid"], proc["start_time"]):
            _signal(proc["pid"], signal.SIGKILL)
    while any(_alive(p["pid"], p["start_time"]) for p in procs):
        time.sleep(0.1)
    for proc in procs:
        child = _CHILDREN.pop(proc["pid"], None)
        if child is not None:
            child.wait()
    (workdir / STATE_FILE).unlink(missing_ok=True)
    return {"workdir": str(workdir), "stopped": [proc["pid"] for proc in procs]}


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def status(workdir) -> dict:
    """The recorded processes and, when its REST endpoint answers, the cluster's /overview."""
    workdir = pathlib.Path(workdir).expanduser().resolve()
    state = _read_state(workdir)
    if state is None:
        return {"workdir": str(workdir), "running": False, "pids": [], "rest_port": None}
    alive = [proc["pid"] for proc in _processes(state) if _alive(proc["pid"], proc["start_time"])]
    overview = _overview(state["rest_port"]) if alive else None
    info = {"workdir": str(workdir), "running": bool(alive), "pids": alive, "rest_port": state["rest_port"],
            "flink_master": f"localhost:{state['rest_port']}", "jar": state["jar"],
            "job_endpoint": f"{HOST}:{state['job_port']}" if state.get("job_port") else None,
            "logs": str(workdir / "log"), "overview": overview}
    if overview:
        info.update(taskmanagers=overview.get("taskmanagers"), slots_total=overview.get("slots-total"),
                    slots_available=overview.get("slots-available"), jobs_running=overview.get("jobs-running"),
                    flink_version=overview.get("flink-version"))
    return info


# --------------------------------------------------------------------------------------------------- the CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("start", "stop", "status"))
    parser.add_argument("--workdir", default=str(DEFAULT_WORKDIR),
                        help="config, logs, temp files and pids of the cluster (default: %(default)s)")
    parser.add_argument("--jar", default=None,
                        help="Beam's Flink job-server jar with lib/ beside it (default: where `make "
                             "flink-job-server` caches it); the cluster runs from that lib/")
    parser.add_argument("--taskmanagers", type=int, default=1,
                        help="TaskManager processes (default: 1); each starts its own SDK workers (cattag-sdk-worker, "
                             "Beam's PROCESS environment, the default for jobs on a cluster)")
    parser.add_argument("--slots", type=int, default=2, help="task slots per TaskManager (default: 2)")
    parser.add_argument("--port", type=int, default=8081, help="REST port, the --flink_master (default: 8081)")


def _flink_version(jar: pathlib.Path) -> str:
    try:
        return jar.parent.name.rsplit("-flink-", 1)[1]
    except IndexError:
        return "<version>"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="cattag flink-cluster",
                                     description="start, stop or show a local Flink session cluster")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        if args.action == "start":
            jar = pathlib.Path(args.jar) if args.jar else default_jar()
            if not jar.is_file():
                raise ValueError(f"no Flink job server jar at {jar}: build it with `make flink-job-server`")
            info = start(args.workdir, jar=jar, taskmanagers=args.taskmanagers, slots=args.slots,
                         rest_port=args.port)
            print(f"Flink {info.get('flink_version')} session cluster up in {info['startup_s']} s: "
                  f"{info['taskmanagers']} TaskManager(s), {info['slots_total']} slots, web UI "
                  f"http://localhost:{info['rest_port']}, logs in {info['logs']}")
            print(f"run jobs with: --runner FlinkRunner --flink_master {info['flink_master']} "
                  f"--flink_job_server_jar {info['jar']} --flink_version {_flink_version(jar)} "
                  f"--parallelism {info['slots_total']}   (each TaskManager starts its SDK workers: "
                  f"--environment_type PROCESS, cattag-sdk-worker)")
            print(f"stop with: cattag flink-cluster stop --workdir {info['workdir']}")
        elif args.action == "stop":
            done = stop(args.workdir)
            print(f"stopped {len(done['stopped'])} Flink process(es) {done['stopped']}" if done["stopped"]
                  else f"no Flink cluster running from {done['workdir']}")
        else:
            info = status(args.workdir)
            if not info["running"]:
                print(f"no Flink cluster running from {info['workdir']}")
            elif info["overview"] is None:
                print(f"Flink processes {info['pids']} are up but REST on port {info['rest_port']} does not "
                      f"answer; logs in {info['logs']}")
            else:
                print(f"Flink {info['flink_version']} session cluster at {info['flink_master']}: "
                      f"{info['taskmanagers']} TaskManager(s), {info['slots_available']}/{info['slots_total']} "
                      f"slots free, {info['jobs_running']} job(s) running; pids {info['pids']}, "
                      f"logs in {info['logs']}")
    except ClusterError as err:
        print(f"cattag flink-cluster: error: {err}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
