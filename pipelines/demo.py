"""cattag demo: the whole product, on a synthetic catalogue it makes itself or on the user's music.

Without --input: synthesize a labelled catalogue (plus two broken files, to show the errors output).
With --input DIR: the user's labelled folders (DIR/<genre>/<file>, --labels from-dirs) or a
manifest with a label column (--labels manifest). Then:
  1. tag it with the pretrained musicnn, no training (50 tags; fetched and converted once, cached);
  2. featurize it, train the default genre model (a head on musicnn), evaluate it, tag with it;
  3. load both taggings into an embedded DuckDB file, show similar tracks and search by tag;
  4. write the run report (report.html) and say where it is.
One line per step (and a progress line while a pipeline runs); --verbose shows everything.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import pathlib
import shutil

from database import connect
from pipelines import featurize, load, report, synthetic, tag
from runners import quiet
from schemas import presets
from trainer import pretrained, task
from transforms.catalogue import LABEL_MODES

_LOG = logging.getLogger(__name__)


PASSES_BEAM_FLAGS = True  # flags it does not know go to featurize, and from there to Beam


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The demo's own flags (it is not a Beam pipeline itself, so argparse suffices)."""
    parser.add_argument("--workdir", default="cattag-demo",
                        help="where everything is written; emptied first (default %(default)s)")
    parser.add_argument("--input", help="your own labelled catalogue (a folder or manifest) instead of synthetic music")
    parser.add_argument("--labels", choices=[m for m in LABEL_MODES if m != "none"], default="from-dirs",
                        help="with --input: where its labels come from (default %(default)s: DIR/<genre>/<file>)")
    parser.add_argument("--tracks-per-style", type=int, default=8,
                        help="synthetic tracks per style, without --input (default %(default)s)")
    parser.add_argument("--seconds", type=float, default=12.0,
                        help="length of each synthetic track, without --input (default %(default)s)")
    parser.add_argument("--epochs", type=int, default=20, help="training epochs at most (default %(default)s)")


def run(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="cattag demo")
    add_arguments(parser)
    args, beam_flags = parser.parse_known_args(argv)
    workdir = pathlib.Path(args.workdir).resolve()
    if args.input and workdir in (pathlib.Path(args.input).resolve(), *pathlib.Path(args.input).resolve().parents):
        raise ValueError(f"--workdir {args.workdir} holds --input {args.input}, and the demo empties its workdir")
    if workdir.exists():
        shutil.rmtree(workdir)
    if args.input:
        catalogue, labels = args.input, args.labels
        print(f"cattag demo: your catalogue {catalogue} (labels {labels}) -> {workdir}")
    else:
        catalogue, labels = _synthetic_catalogue(workdir / "catalogue", args), "from-dirs"
    with _steps_quiet():
        return _run_steps(args, catalogue, labels, workdir, beam_flags)


def _run_steps(args, catalogue, labels: str, workdir: pathlib.Path, beam_flags: list[str]) -> dict:
    backbone = presets.DEFAULT_BACKBONE
    pretrained.fetch(backbone)  # a download the first time only
    zero_shot = tag.run(["--input", str(catalogue), "--model", backbone, "--output", str(workdir / "tags-pretrained"),
                         *beam_flags])
    _say(1, f"tagged with the pretrained {backbone}, no training: {_tag_line(zero_shot)}")

    features = workdir / "features"
    result = featurize.run(["--input", str(catalogue), "--output", str(features), "--labels", labels, *beam_flags])
    splits = ", ".join(f"{split} {result.tracks(split)}" for split in result.counts)
    _say(2, f"featurized: tracks per split {splits}; {result.failed['count']} failed -> {features}")

    model_dir = workdir / "model"
    card = task.run(task.TrainConfig(data_dir=str(features), model_dir=str(model_dir), epochs=args.epochs,
                                     verbose=0))
    metrics, training = card.metrics, card.training
    _say(3, f"trained {card.model_version} ({card.arch}), {training['epochs_run']} epochs on "
            f"{training['device']} in {training['train_s']:.0f} s: {metrics['split']} track accuracy "
            f"{metrics['track_accuracy']:.2f}, macro-F1 {metrics['macro_f1']:.2f} -> {model_dir}")

    tags_dir = workdir / "tags"
    tagged = tag.run(["--input", str(catalogue), "--model", str(model_dir), "--output", str(tags_dir), *beam_flags])
    _say(4, f"tagged with it: {_tag_line(tagged)}")

    url = f"duckdb:///{workdir / 'catalogue.duckdb'}"
    rows = 0
    for tags_output in (zero_shot.output, tags_dir):
        loaded = load.main(["--tags", str(tags_output), "--db", url])
        rows += loaded.rows
    _say(5, f"loaded {rows} tag rows into {url}; for example:")
    with connect(url, read_only=True) as database:
        for example in _examples(tagged, card.labels[:1]):
            found = database.similar(example, k=3, model_version=tagged.model_version).neighbours
            print(f"   similar to {example}: " + ", ".join(f"{n.track_id} ({n.similarity:.2f})" for n in found))
        common = _common_tag(zero_shot)
        if common:
            found = database.search([common], k=3, model_version=zero_shot.model_version)
            print(f"   tagged {common!r}: " + ", ".join(t.track_id for t in found.tracks))

    report_path = workdir / "report.html"
    facts = report.write_report(str(tags_dir), report_path, model=str(model_dir), db=url)
    print(f"\nReport: {report_path}\n  open it in a browser: the run's figures, genres and tags, the "
          f"{facts.flagged} tracks flagged for review, the {facts.failed} failed inputs, an embedding map, the "
          "model's plots and similar tracks")
    return {"pretrained": zero_shot, "featurize": result, "train": card, "tag": tagged, "load": loaded,
            "report": report_path}


def _say(step: int, text: str) -> None:
    print(f"{step}/5 {text}", flush=True)


def _tag_line(tagged: tag.TagRun) -> str:
    return (f"{tagged.tagged} tracks ({tagged.low_confidence} flagged for review), {tagged.failed} failed, "
            f"{tagged.wall_s:.0f} s -> {tagged.output}")


@contextlib.contextmanager
def _steps_quiet():
    """The steps' own INFO lines (each pipeline's start and summary) would repeat what the demo says
    in one line per step; progress lines stay. --verbose keeps them all."""
    if not quiet.requested():
        yield
        return
    loggers = [logging.getLogger(name) for name in ("pipelines", "trainer", "transforms", "database", "report")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _synthetic_catalogue(folder: pathlib.Path, args) -> pathlib.Path:
    paths = synthetic.write_catalogue(folder, tracks_per_style=args.tracks_per_style, seconds=args.seconds)
    (folder / "empty.wav").write_bytes(b"")
    (folder / "not-audio.mp3").write_text("this is a text file with an audio extension\n")
    print(f"cattag demo: {len(paths)} synthetic tracks in {len(synthetic.STYLES)} styles, and 2 broken files "
          f"(to show the errors output), in {folder}", flush=True)
    return folder


def _examples(tagged: tag.TagRun, labels: list[str]) -> list[str]:
    """For each label, the track the model tags with it most confidently: queries for `similar`."""
    rows = tag.read_tags(tagged.output).to_pylist()
    found = []
    for label in labels:
        candidates = [r for r in rows if r["genre"] == label]
        if candidates:
            found.append(max(candidates, key=lambda r: (r["confidence"], r["track_id"]))["track_id"])
    return found


def _common_tag(tagged: tag.TagRun) -> str | None:
    """The tag the pretrained model gave most tracks: something to search for."""
    counts: dict[str, int] = {}
    for row in tag.read_tags(tagged.output, ["tags"]).to_pylist():
        for entry in row["tags"] or []:
            counts[entry["label"]] = counts.get(entry["label"], 0) + 1
    return max(sorted(counts), key=counts.get) if counts else None
