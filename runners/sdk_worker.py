"""An SDK worker a Flink TaskManager starts itself: the PROCESS environment's command.

    cattag-sdk-worker --id=ID --provision_endpoint=HOST:PORT [--control_endpoint=...] [...]

Beam's Python container runs `boot`, which asks the provision service for the job's options and endpoints,
installs staged packages, then starts the SDK harness. Outside a container there is nothing to install (the
TaskManager runs on a machine with cattag installed), so this does the rest of boot's work: the endpoints
(from the command line, else from the provision info), the state cache and data buffer from the job's
options, then Beam's SdkHarness, exactly as the LOOPBACK and EXTERNAL worker pools run it.

Why a PROCESS environment: with several TaskManagers, each TaskManager numbers its SDK workers from 1, so
TaskManagers sharing one LOOPBACK or EXTERNAL worker pool ask it for the same worker ids. Here each
TaskManager starts and owns its own workers, as on a real cluster, and they die with it.
"""

from __future__ import annotations

import argparse
import logging
import pathlib
import shutil
import sys

COMMAND = "cattag-sdk-worker"  # the console script (pyproject.toml) that runs main()


def command_path() -> pathlib.Path:
    """This installation's `cattag-sdk-worker`: beside this interpreter (a venv's bin/), else on PATH."""
    beside = pathlib.Path(sys.executable).with_name(COMMAND)
    if beside.is_file():
        return beside
    found = shutil.which(COMMAND)
    if found is None:
        raise ValueError(f"no {COMMAND} beside {sys.executable} or on PATH: install cattag (pip install -e . or "
                         "its wheel) so that Flink's TaskManagers can start SDK workers")
    return pathlib.Path(found)


def _provision_info(endpoint: str, worker_id: str):
    import grpc
    from apache_beam.portability.api import beam_provision_api_pb2, beam_provision_api_pb2_grpc

    with grpc.insecure_channel(endpoint) as channel:
        stub = beam_provision_api_pb2_grpc.ProvisionServiceStub(channel)
        reply = stub.GetProvisionInfo(beam_provision_api_pb2.GetProvisionInfoRequest(),
                                      metadata=[("worker_id", worker_id)], timeout=60)
    return reply.info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runners.sdk_worker")
    parser.add_argument("--id", required=True)
    parser.add_argument("--provision_endpoint", required=True)
    parser.add_argument("--control_endpoint")
    args, _ = parser.parse_known_args(argv)  # boot's other flags (logging, artifacts, semi_persist_dir)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format=f"%(asctime)s sdk-worker {args.id} %(levelname)s %(name)s: %(message)s")

    from apache_beam.options.pipeline_options import DebugOptions
    from apache_beam.runners.worker import sdk_worker, sdk_worker_main
    from google.protobuf import json_format

    info = _provision_info(args.provision_endpoint, args.id)
    options = sdk_worker_main._parse_pipeline_options(json_format.MessageToJson(info.pipeline_options))
    control = args.control_endpoint or info.control_endpoint.url
    experiments = options.view_as(DebugOptions).experiments or []
    sdk_worker.SdkHarness(
        control, worker_id=args.id,
        state_cache_size=sdk_worker_main._get_state_cache_size_bytes(options=options),
        data_buffer_time_limit_ms=sdk_worker_main._get_data_buffer_time_limit_ms(experiments)).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
