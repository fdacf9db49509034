"""cattag demo: the whole product, on a synthetic catalogue it makes itself or on the user's music.

Without --input: synthesize a labelled catalogue (plus two broken files, to show the errors output).
With --input DIR: the user's labelled folders (DIR/<genre>/<file>, --labels from-dirs) or a
manifest with a label column (--labels manifest). Then:
  1. tag it with the pretrained musicnn, no training (50 tags; fetched and converted once, cached);
  2. featurize it, train the default genre model (a head on musicnn), evaluate it, tag with it;
  3. load both taggings into an embedded DuckDB file, show similar tracks and search by tag.
"""

from __future__ import annotations

import argparse
import json
import logging
import pathlib
import shutil

from pipelines import featurize, load, search, similar, synthetic, tag
from schemas import examples, presets
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
    else:
        catalogue, labels = _synthetic_catalogue(workdir / "catalogue", args), "from-dirs"

    backbone = presets.DEFAULT_BACKBONE
    pretrained.fetch(backbone)  # a download the first time only
    zero_shot = tag.run(["--input", str(catalogue), "--model", backbone, "--output", str(workdir / "tags-pretrained"),
                         *beam_flags])
    print(_tag_report(zero_shot, title=f"Pretrained {backbone}, no training"))

    features = workdir / "features"
    result = featurize.run(["--input", str(catalogue), "--output", str(features), "--labels", labels, *beam_flags])
    print(_report(result, features))

    model_dir = workdir / "model"
    card = task.run(task.TrainConfig(data_dir=str(features), model_dir=str(model_dir), epochs=args.epochs,
                                     verbose=0))
    print(_training_report(card, model_dir))

    tags_dir = workdir / "tags"
    tagged = tag.run(["--input", str(catalogue), "--model", str(model_dir), "--output", str(tags_dir), *beam_flags])
    print(_tag_report(tagged, title=f"Your genre model {card['model_version']}"))

    url = f"duckdb:///{workdir / 'catalogue.duckdb'}"
    for tags_output in (zero_shot.output, tags_dir):
        loaded = load.main(["--tags", str(tags_output), "--db", url])
        print(f"\nLoaded {loaded.rows} tag rows from {tags_output} into {url} "
              f"({', '.join(f'{n} {t}' for t, n in loaded.counts.items())})")
    for example in _examples(tagged, card["labels"][:2]):
        print()
        similar.main(["--db", url, example, "-k", "4", "--model-version", tagged.model_version])
    common = _common_tag(zero_shot)
    if common:
        print()
        search.main(["--db", url, "--tag", common, "-k", "4", "--model-version", zero_shot.model_version])
    return {"pretrained": zero_shot, "featurize": result, "train": card, "tag": tagged, "load": loaded}


def _synthetic_catalogue(folder: pathlib.Path, args) -> pathlib.Path:
    paths = synthetic.write_catalogue(folder, tracks_per_style=args.tracks_per_style, seconds=args.seconds)
    (folder / "empty.wav").write_bytes(b"")
    (folder / "not-audio.mp3").write_text("this is a text file with an audio extension\n")
    _LOG.info("demo: wrote %d synthetic tracks in %d styles (+2 broken files) to %s",
              len(paths), len(synthetic.STYLES), folder)
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


def _report(metadata: dict, features: pathlib.Path) -> str:
    lines = ["", "Segments per split and label:", f"  {'label':<20}" + "".join(f"{s:>12}" for s in metadata["counts"])]
    for label in metadata["labels"]:
        row = [metadata["counts"][split].get(label, {}).get("segments", 0) for split in metadata["counts"]]
        lines.append(f"  {label:<20}" + "".join(f"{n:>12}" for n in row))
    lines.append("")
    lines.append(f"Failed inputs ({metadata['failed']['count']}), also in {features / examples.ERRORS_DIR}:")
    for failure in metadata["failed"]["listed"]:
        lines.append(f"  {pathlib.Path(failure['uri']).name:<20} {failure['stage']:<8} {failure['error']}")
    lines.append("")
    lines.append(f"Feature config {metadata['feature_version']}: {json.dumps(metadata['feature_config'])}")
    lines.append(f"Outputs: {features}/{{train,validation,test}}/, metadata.json, schema.pbtxt, _errors/")
    return "\n".join(lines)


def _training_report(card: dict, model_dir: pathlib.Path) -> str:
    metrics, training = card["metrics"], card["training"]
    return "\n".join([
        "",
        f"Model {card['model_version']} ({card['arch']}, {training['parameters']} parameters), "
        f"{training['epochs_run']} epochs on {training['device']} in {training['train_s']:.0f} s "
        f"({training['examples_per_s']:.0f} examples/s)",
        f"  {metrics['split']} split: track accuracy {metrics['track_accuracy']:.2f}, "
        f"segment accuracy {metrics['segment_accuracy']:.2f}, macro-F1 {metrics['macro_f1']:.2f} "
        f"over {metrics['tracks']} tracks",
        f"  SavedModel, model card and metrics in {model_dir}; plots: "
        + ", ".join(p.name for p in sorted(model_dir.glob("*.png"))),
    ])


def _tag_report(tagged: tag.TagRun, *, title: str, shown: int = 8) -> str:
    rows = tag.read_tags(tagged.output).to_pylist()
    rows.sort(key=lambda r: (r["low_confidence"], -r["confidence"]))
    lines = ["", f"{title}: tags of {tagged.tagged} tracks ({tagged.low_confidence} flagged for review, "
             f"{tagged.failed} failed; the {shown // 2} most confident, then the {shown // 2} that most need review):",
             f"  {'track':<34} {'genre':<16} {'conf':>5}  {'tags carried (score)':<44} review"]
    for row in rows[:shown // 2] + rows[-(shown // 2):]:
        carried = ", ".join(f"{t['label']} {t['score']:.2f}" for t in row["tags"] or []) or "-"
        lines.append(f"  {row['track_id'][:34]:<34} {(row['genre'] or '-')[:16]:<16} {row['confidence']:>5.2f}  "
                     f"{carried[:44]:<44} {row['review_reason'] or ''}")
    lines.append(f"  Parquet in {tagged.output} ({len(tagged.files)} file(s)), failed inputs in "
                 f"{tagged.output}/_errors/")
    return "\n".join(lines)
