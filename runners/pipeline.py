"""The Pipeline a command runs on: the runner its flags name, checked before any job starts.

Beam's own runner choice has two traps on one machine: the DirectRunner first tries Prism (which it
downloads at run time, so offline it fails), and the portable runners start SDK workers as Docker
containers (which an offline laptop cannot pull). `make_pipeline` avoids both; `_check_flink` turns
what FlinkRunner would report as a Java stack trace, or a hang, into one-line errors. FlinkRunner jobs run on
runners/flink_loopback.py's LoopbackFlinkRunner: the job server and worker pool it starts listen on loopback.
"""

from __future__ import annotations

import logging
import pathlib
import shutil
import socket

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, PortableOptions, StandardOptions

from runners.loopback import bind_to_loopback

_DIRECT_RUNNERS = {None, "DirectRunner", "direct", "SwitchingDirectRunner"}
_LOCAL_RUNNERS = _DIRECT_RUNNERS | {"BundleBasedDirectRunner", "FnApiRunner", "PrismRunner"}
_LOG = logging.getLogger(__name__)
ENVIRONMENT_CACHE_MS = 60 * 1000  # --environment_cache_millis on a cluster: see _workers_started_by_taskmanagers


def progress_is_local(options: PipelineOptions, setting: str) -> bool:
    """Progress files only work where workers share the launcher's disk."""
    if setting != "auto":
        return setting == "on"
    return workers_share_this_disk(options)


def workers_share_this_disk(options: PipelineOptions) -> bool:
    """Whether the job's workers can write files the launcher reads (progress, the watch's events): they
    run here, or on a Flink cluster whose JobManager is this machine (`cattag flink-cluster`), whose
    TaskManagers start their SDK workers here, as this user."""
    if runs_on_this_machine(options):
        return True
    from runners.flink_cluster import rest_address
    from runners.flink_loopback import is_loopback

    address = rest_address(options.get_all_options().get("flink_master"))
    return (options.view_as(StandardOptions).runner == "FlinkRunner" and address is not None
            and is_loopback(address.rsplit(":", 1)[0].strip("[]")))


def runs_on_this_machine(options: PipelineOptions) -> bool:
    """Whether the job's workers run here: a direct runner, Flink's embedded cluster, or the
    portable runner's embedded job service."""
    all_options = options.get_all_options()
    runner = options.view_as(StandardOptions).runner
    if runner in _LOCAL_RUNNERS:
        return True
    if runner == "FlinkRunner":
        return all_options.get("flink_master") in ("[local]", "[auto]", None)
    if runner == "PortableRunner":
        return all_options.get("job_endpoint") == "embed"
    return False


def make_pipeline(options: PipelineOptions) -> beam.Pipeline:
    """A Pipeline on the runner the flags name.

    Without --runner (or with --runner DirectRunner) this is the FnApiRunner, which Beam's
    DirectRunner itself falls back to, minus the DirectRunner's first attempt at PrismRunner:
    Prism downloads a binary at run time, so it fails offline and behaves differently online.
    --direct_num_workers and --direct_running_mode apply as usual.

    Every gRPC server the job opens in this process binds loopback (runners/loopback.py).
    """
    bind_to_loopback()
    if options.view_as(StandardOptions).runner not in _DIRECT_RUNNERS:
        _check_flink(options)
        portable = options.view_as(PortableOptions)
        if portable.environment_type is None and runs_on_this_machine(options):
            # Portable runners otherwise start each SDK worker as a Docker container of Beam's
            # image, which an offline laptop cannot pull (the run then waits minutes and fails).
            portable.environment_type = "LOOPBACK"
            _LOG.info("--environment_type LOOPBACK (the job runs on this machine; SDK workers in this process)")
        if options.view_as(StandardOptions).runner == "FlinkRunner":
            from runners.flink_loopback import LoopbackFlinkRunner

            if portable.environment_type is None:
                _workers_started_by_taskmanagers(options)
            _through_the_clusters_job_server(options)
            if options.view_as(StandardOptions).streaming:
                _finish_bundles_before_checkpoints(options)

            return beam.Pipeline(runner=LoopbackFlinkRunner(), options=options)
        return beam.Pipeline(options=options)
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle

    # As the DirectRunner does: workers read the pipeline options from the provision info.
    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    provision = fn_runner.ExtendedProvisionInfo(beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded))
    return beam.Pipeline(runner=fn_runner.FnApiRunner(provision_info=provision), options=options)


def _finish_bundles_before_checkpoints(options: PipelineOptions) -> None:
    """A streaming job on Flink: each step finishes its bundle before a checkpoint, and sends what it made on.

    Otherwise (Beam's default) a checkpoint that finds a bundle open finishes it into a buffer, which the step
    sends on only when its next element or watermark arrives. The step after the watch's Impulse gets one
    element and then the final watermark, nothing more: when a checkpoint came before its first bundle ended
    (the SDK worker still starting, a busy machine), the impulse's restriction stayed in that buffer and the
    watch never polled (seen with --checkpointing_interval 2000, in about half the runs under load; DoFnOperator
    of Beam 2.62's Flink runner, snapshotState and processWatermark1).
    """
    from runners.flink_loopback import JobServerHostOptions

    settings = options.view_as(JobServerHostOptions)
    if settings.finish_bundle_before_checkpointing is None:
        settings.finish_bundle_before_checkpointing = True


def _workers_started_by_taskmanagers(options: PipelineOptions) -> None:
    """A Flink cluster's SDK workers: PROCESS, each TaskManager starting `cattag-sdk-worker` processes itself
    (runners/sdk_worker.py), as many per TaskManager as it has slots unless --sdk_worker_parallelism says.

    Beam's default would pull its SDK's Docker image (no cattag in it, and nothing to pull offline); LOOPBACK or
    one EXTERNAL worker pool serve one TaskManager only (each numbers its workers from 1, and in one pool the
    ids collide). The command is this installation's: on a multi-host cluster, install cattag at the same path
    on every TaskManager host, or pass --environment_type and --environment_config yourself."""
    import json

    from runners import flink_cluster
    from runners.sdk_worker import command_path

    portable = options.view_as(PortableOptions)
    portable.environment_type = "PROCESS"
    portable.environment_config = json.dumps({"command": str(command_path())})
    master = options.get_all_options().get("flink_master")
    given = any(flag.split("=", 1)[0] == "--sdk_worker_parallelism" for flag in getattr(options, "_flags", []))
    slots = flink_cluster.slots_per_taskmanager(master)
    if not given and slots:
        portable.sdk_worker_parallelism = slots
    if not any(flag.split("=", 1)[0] == "--environment_cache_millis" for flag in getattr(options, "_flags", [])):
        # Keep a job's SDK workers from one stage to the next (a cluster with Beam on its class path, as
        # `cattag flink-cluster` runs it, honours this): without it every batch stage starts its own
        # processes, and a one-clip featurize took 62 s instead of 35 on 2 TaskManagers. It is also how long
        # they outlive the job (Beam releases them that long after their last stage): a minute, not more,
        # since a tag job's workers hold 1.5-2 GB each and a session cluster runs job after job.
        portable.environment_cache_millis = ENVIRONMENT_CACHE_MS
    _LOG.info("--environment_type PROCESS (%s, %s per TaskManager): SDK workers started by the TaskManagers",
              portable.environment_config, portable.sdk_worker_parallelism)


def _through_the_clusters_job_server(options: PipelineOptions) -> None:
    """A cluster `cattag flink-cluster start` started (runners/flink_cluster.cattag_settings) runs a job server
    beside it, and has Beam on its TaskManagers' class path: the job goes through that job server (unless
    --job_endpoint names another) and uploads no jars. Otherwise each job starts a job server of its own, and
    Beam's job server uploads its whole class path (150 MB) to the JobManager with every job: together 16 of
    the 20 s a one-clip featurize took to start on a running cluster (bench/RESULTS.md)."""
    from runners import flink_cluster
    from runners.flink_loopback import NO_JARS_TO_STAGE, JobServerHostOptions
    from runners.ports import listening

    settings = flink_cluster.cattag_settings(options.get_all_options().get("flink_master"))
    detector = options.view_as(JobServerHostOptions)
    beam_installed = settings.get(flink_cluster.BEAM_ON_CLASS_PATH_KEY) == "true"
    if beam_installed and detector.pipeline_resources_detector_factory_class is None:
        detector.pipeline_resources_detector_factory_class = NO_JARS_TO_STAGE
    endpoint = settings.get(flink_cluster.JOB_ENDPOINT_KEY)
    portable = options.view_as(PortableOptions)
    if endpoint and portable.job_endpoint is None and listening(int(endpoint.rpartition(":")[2])):
        portable.job_endpoint = endpoint
        _LOG.info("through the cluster's job server at %s (no jars uploaded)", endpoint)


def _check_flink(options: PipelineOptions) -> None:
    """What FlinkRunner needs, checked here as one-line errors rather than a Java stack trace or a
    hang later: a job-server jar (Beam 2.77's own is not on Maven Central: `make flink-job-server`
    builds one), Java to run it, and a reachable --flink_master when it names a cluster."""
    if options.view_as(StandardOptions).runner != "FlinkRunner":
        return
    all_options = options.get_all_options()
    jar = all_options.get("flink_job_server_jar")
    if jar is None:
        raise ValueError("FlinkRunner needs --flink_job_server_jar: `make flink-job-server` builds Beam's Flink job "
                         "server from Maven Central and prints its path (Beam's own download of it fails)")
    if "://" not in jar and not pathlib.Path(jar).is_file():
        raise ValueError(f"--flink_job_server_jar {jar}: no such file (`make flink-job-server` builds it)")
    if "://" not in jar:
        _check_jar_class_path(pathlib.Path(jar))
    master = all_options.get("flink_master") or "[auto]"
    if master not in ("[local]", "[auto]"):
        _check_reachable(master, default_port=8081)
    if shutil.which("java") is None:
        raise ValueError("FlinkRunner runs its job server with Java, and `java` is not on PATH: install Java 17 "
                         "(`make flink-job-server` does, with Maven)")


def _check_jar_class_path(jar: pathlib.Path) -> None:
    """A thin job-server jar (make flink-job-server's) runs only beside the lib/ its manifest names; one
    copied away from it, or whose lib/ a newer build replaced, fails in Java at start-up."""
    import zipfile

    try:
        with zipfile.ZipFile(jar) as archive:
            manifest = archive.read("META-INF/MANIFEST.MF").decode("utf-8", "replace")
    except (zipfile.BadZipFile, KeyError, OSError) as err:
        raise ValueError(f"--flink_job_server_jar {jar}: not a job-server jar ({err}); `make flink-job-server` "
                         "builds one") from err
    unfolded = manifest.replace("\r\n ", "").replace("\n ", "")  # manifest lines wrap at 72 bytes
    class_path = next((line.split(":", 1)[1].split() for line in unfolded.splitlines()
                       if line.startswith("Class-Path:")), [])
    missing = [entry for entry in class_path if not (jar.parent / entry).is_file()]
    if missing:
        raise ValueError(f"--flink_job_server_jar {jar}: {len(missing)} of the {len(class_path)} jars it needs beside "
                         f"it are missing (e.g. {missing[0]}): a stale or moved build; run `make flink-job-server`")


def _check_reachable(master: str, *, default_port: int) -> None:
    """--flink_master HOST[:PORT] must answer on its REST port, or the job server retries for minutes."""
    address = master.split("://", 1)[-1].rstrip("/")
    host, _, port = address.rpartition(":") if ":" in address else (address, "", str(default_port))
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            return
    except (OSError, ValueError) as err:
        raise ValueError(f"--flink_master {master}: nothing answers at {host}:{port} ({err}); start the Flink "
                         "cluster or name its REST address (JobManager host:8081)") from err
