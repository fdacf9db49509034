"""The `cattag` command: parses the subcommand, hands its flags to that pipeline's run()."""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys

from runners import process_exit, quiet

# name -> (module, its entry point taking argv, one-line help). For --help, a module has
# add_arguments(parser) (argparse commands) or OPTIONS (its Beam PipelineOptions classes).
COMMANDS = {
    "featurize": ("pipelines.featurize", "run", "decode a catalogue into sharded TFRecords of log-mel segments"),
    "train": ("pipelines.train", "main", "train, evaluate and export a genre model from featurize output"),
    "evaluate": ("trainer.evaluate", "main", "evaluate an exported model on a featurize output's split"),
    "pretrained": ("trainer.pretrained", "main", "fetch, convert and cache pretrained musicnn weights; list them"),
    "tag": ("pipelines.tag", "run", "tag a catalogue with an exported model: genres, confidences, embeddings"),
    "describe": ("pipelines.describe", "run", "tempo, key and loudness per track of a catalogue, with no model (Parquet)"),
    "load": ("pipelines.load", "main", "load tag Parquet into the recommender database (DuckDB or PostgreSQL)"),
    "similar": ("pipelines.similar", "main", "the tracks nearest to a track by embedding, from the database"),
    "review": ("pipelines.review", "main", "the tracks most worth a person's look first, as a sheet to fill in for "
                                           "`cattag train --add-labels`"),
    "search": ("pipelines.search", "main", "the tracks carrying given tags (all or any), from the database"),
    "report": ("pipelines.report", "main", "a tag output as one self-contained HTML page: figures, tags, review, failures, map"),
    "demo": ("pipelines.demo", "run", "build a small synthetic catalogue and run the product on it end to end"),
    "flink-cluster": ("runners.flink_cluster", "main", "start, stop or show a local Flink session cluster (JobManager + TaskManagers on loopback)"),
}
_OUR_LOGGERS = ("pipelines", "transforms", "trainer", "schemas", "database", "report", "runners", "cattag")


def main(argv: list[str] | None = None) -> int:
    # `cattag featurize --help | head` should end quietly, as other command-line tools do.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(_usage(), file=sys.stderr if argv and argv[0] not in ("-h", "--help") else sys.stdout)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    command, rest = argv[0], argv[1:]
    verbose = "--verbose" in rest
    rest = [arg for arg in rest if arg != "--verbose"]
    module_name, entry, _ = COMMANDS[command]
    module = importlib.import_module(module_name)
    if "-h" in rest or "--help" in rest:
        print(help_text(command, module))
        return 0
    _configure_logging(verbose=verbose)
    try:
        getattr(module, entry)(rest)
    except (ValueError, OSError) as err:  # bad flags, bad paths, mismatching configs: no traceback
        print(f"cattag {command}: error: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:
        if "failed in state" not in str(err):  # not a job the runner reported as failed: a bug, show it all
            raise
        # A portable runner's job failed (a lost TaskManager, a worker crash): what the runner said, on one
        # line, and what to do; the outputs it left are incomplete and the same command replaces them.
        reason = " ".join(str(err).split())[:600]
        print(f"cattag {command}: error: the job failed on the runner ({reason}); its outputs are incomplete: "
              "run the same command again once the runner is healthy", file=sys.stderr)
        return 1
    return 0


def help_text(command: str, module) -> str:
    parser = argparse.ArgumentParser(
        prog=f"cattag {command}",
        description=COMMANDS[command][2],
        epilog=("Flags not listed here go to Beam's PipelineOptions, for example --runner, "
                "--direct_num_workers 2 --direct_running_mode multi_processing. " if getattr(module, "PASSES_BEAM_FLAGS", False)
                else "") + "--verbose (any command): also the libraries' own log lines (Beam's INFO, TensorFlow's "
        "start-up, decoder warnings).",
    )
    if hasattr(module, "add_arguments"):
        module.add_arguments(parser)
    else:
        for options_class in module.OPTIONS:
            options_class._add_argparse_args(parser)  # pylint: disable=protected-access
    return parser.format_help()


def _usage() -> str:
    lines = ["usage: cattag COMMAND [flags] [--verbose]  (cattag COMMAND --help for its flags)", "", "commands:"]
    lines += [f"  {name:<10} {summary}" for name, (_, _, summary) in COMMANDS.items()]
    return "\n".join(lines)


def _configure_logging(*, verbose: bool) -> None:
    """cattag's own lines at INFO; other libraries' at WARNING (Beam's INFO only with --verbose), and
    TensorFlow's Python side at ERROR unless verbose."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s" if verbose else "%(asctime)s %(message)s",
                        datefmt="%H:%M:%S", level=logging.INFO if verbose else logging.WARNING)
    for name in _OUR_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.INFO)
    if not verbose:
        logging.getLogger("tensorflow").setLevel(logging.ERROR)
        logging.getLogger("absl").setLevel(logging.ERROR)
        for handler in logging.getLogger().handlers:
            handler.addFilter(_beam_noise)
    # Multi-process DirectRunner workers parse the flags without cattag's option classes and warn,
    # per worker, that they discard them; the launcher has parsed them already. Worker errors are
    # forwarded at ERROR and still show.
    logging.getLogger("apache_beam.runners.portability.local_job_service").setLevel(logging.ERROR)


def _beam_noise(record: logging.LogRecord) -> bool:
    """False for a line that says nothing to a cattag user: Beam 2.77's RunInference warns, on the
    root logger at every model load, that it cannot read the process's memory (its `resource` import
    is tied to an optional module that fails to import; the memory figure only feeds its metrics)."""
    return not record.getMessage().startswith("Resource module is not available")


def entry() -> None:
    """The `cattag` executable (and `python -m pipelines.cli`): main() in a process of its own."""
    quiet.configure(verbose="--verbose" in sys.argv[1:])  # before TensorFlow loads; local workers inherit it
    code = main()
    process_exit.exit_without_native_teardown(code)


if __name__ == "__main__":
    entry()
