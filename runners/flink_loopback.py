"""FlinkRunner with the job server it starts, and Flink embedded in that, listening on loopback only.

Beam's FlinkRunner starts the Flink job server (`java -jar ... --job-port ...`). Measured on Beam 2.77 with the 2.62 job server (tests/test_listening.py):
- the job server's job and artifact ports bind to --job-host, which Beam's Python launcher never passes, and
  its expansion service (which cattag never uses: no cross-language transforms) opens one more port;
- Flink embedded in the job server (`--flink_master [local]`) binds its blob server and shuffle to every
  interface unless its config names a bind host, and the job server reads no config unless given one;
- Beam's Java gRPC servers ignored that host anyway (NettyServerBuilder.forPort): the job-server jar that
  `make flink-job-server` builds carries a patched ServerFactory that binds the given address.
Whoever reaches the job port can submit a job, which runs their code as this user. So cattag starts the job
server itself with `--job-host 127.0.0.1`, no expansion service, and a Flink config of loopback bind hosts.
`--flink_job_server_host 0.0.0.0` (or a host name) opens the job server wider, with a warning line. The
LOOPBACK worker pool in this process is runners/loopback.py's concern.
"""

from __future__ import annotations

import argparse
import logging
import pathlib

from apache_beam.options.pipeline_options import FlinkRunnerOptions, PipelineOptions
from apache_beam.runners.portability import flink_runner, job_server

from runners.ports import HOST

_LOG = logging.getLogger(__name__)
# The job-server jar's class (runners/flink-job-server/pom.xml) that detects no jars to stage with a job.
NO_JARS_TO_STAGE = "org.cattag.flink.NoJarsToStage"
# Flink's own settings for the cluster the job server embeds (--flink_master [local]): every address and
# bind host of its JobManager and TaskManager services on loopback.
LOCAL_FLINK_CONFIG = {
    "jobmanager.bind-host": HOST,
    "jobmanager.rpc.address": HOST,
    "taskmanager.bind-host": HOST,
    "taskmanager.host": HOST,
    "rest.address": HOST,
    "rest.bind-address": HOST,
}


class JobServerHostOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument(
            "--flink_job_server_host", default=HOST,
            help="address the Flink job server cattag starts binds its job and artifact ports to (default: "
                 f"{HOST}, this machine only). Anyone who reaches the job port can run code as you: open it "
                 "(0.0.0.0, or one interface's address) only on a network you trust")
        # The job server's Java option (PipelineResourcesOptions): declared here so that Beam passes it on.
        # runners/pipeline.py sets it for clusters that have Beam on their class path (the job-server jar's
        # org.cattag.flink.NoJarsToStage: no jars uploaded with each job).
        parser.add_argument("--pipeline_resources_detector_factory_class", default=None, help=argparse.SUPPRESS)
        # FlinkPipelineOptions' finishBundleBeforeCheckpointing, which runners/pipeline.py turns on for streaming
        # jobs (the reason is there): declared so that Beam passes it on.
        parser.add_argument("--finish_bundle_before_checkpointing", action="store_true", default=None,
                            help=argparse.SUPPRESS)


def is_loopback(host: str) -> bool:
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")


def local_flink_conf_dir(parent: pathlib.Path) -> pathlib.Path:
    """A Flink conf dir (config.yaml, flat keys) with LOCAL_FLINK_CONFIG, for the job server's --flink-conf-dir."""
    conf = parent / "flink-conf"
    conf.mkdir(parents=True, exist_ok=True)
    lines = [f'{key}: "{value}"' for key, value in LOCAL_FLINK_CONFIG.items()]
    (conf / "config.yaml").write_text("\n".join(lines) + "\n")
    return conf


class _LoopbackJarJobServer(flink_runner.FlinkJarJobServer):
    def __init__(self, options: PipelineOptions):
        super().__init__(options)
        self._host = options.view_as(JobServerHostOptions).flink_job_server_host
        self._embedded = self._master_url in flink_runner.MAGIC_HOST_NAMES

    def java_arguments(self, job_port, artifact_port, expansion_port, artifacts_dir):
        arguments = super().java_arguments(job_port, artifact_port, expansion_port, artifacts_dir)
        at = arguments.index("--expansion-port")
        arguments[at + 1] = -1  # none: cattag expands no cross-language transforms
        arguments += ["--job-host", self._host]
        if self._embedded:
            arguments += ["--flink-conf-dir", str(local_flink_conf_dir(pathlib.Path(self.local_temp_dir())))]
        return arguments


class LoopbackFlinkRunner(flink_runner.FlinkRunner):
    """FlinkRunner whose job server listens on loopback unless --flink_job_server_host says (module doc)."""

    def default_job_server(self, options):
        flink_options = options.view_as(FlinkRunnerOptions)
        if flink_options.flink_submit_uber_jar:  # no job server to start: Beam's own path
            return super().default_job_server(options)
        flink_options.flink_master = self.add_http_scheme(flink_options.flink_master)
        host = options.view_as(JobServerHostOptions).flink_job_server_host
        if not is_loopback(host):
            _LOG.warning("the Flink job server listens on %s (--flink_job_server_host): anyone who reaches its job "
                         "port can run code as this user", host)
        return job_server.StopOnExitJobServer(_LoopbackJarJobServer(options))
