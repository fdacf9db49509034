"""cattag train: trainer/task.py, plus the review loop's way back in.

    cattag train --data FEAT --model-dir M2 [--add-labels review.csv [--allow-new-labels]]

With --add-labels, the filled rows of a review sheet (schemas/review_sheet.py) join the training data:

    review.csv -> check rows (track, uri, label) -> M2/corrections.csv (a manifest)
               -> `cattag featurize` it into M2/corrections/ (train split only; undecodable files
                  go to M2/corrections/_errors/ as usual, beside the rows refused here)
               -> trainer.task.run(extra_data=M2/corrections) -> M2/assets/reviews.json

A reviewer's label is one of the model's labels (matched ignoring case), `not music` (left out of
training; the track's row says so when tagged), or, with --allow-new-labels, a new label the head
learns. reviews.json is what `cattag tag` with M2 gives those tracks: the person's label outranks
the model's (genre_source "review").
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import logging
import pathlib

import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from schemas import review_sheet
from schemas.failure import ERRORS_DIR, ERRORS_SCHEMA, Failure
from schemas.featurize_metadata import METADATA_FILE, FeaturizeMetadata
from schemas.model_assets import REVIEWS_ASSET
from schemas.tags import NOT_MUSIC
from trainer import task

_LOG = logging.getLogger(__name__)
CORRECTIONS_DIR = "corrections"
CORRECTIONS_MANIFEST = "corrections.csv"
REVIEW_ERRORS = "review-rows.parquet"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    task.add_arguments(parser)
    parser.add_argument("--add-labels", metavar="REVIEW_CSV", default=None,
                        help="a review sheet from `cattag review` with corrected_label filled: those tracks join the "
                             "training data with the reviewers' labels (featurized from their uris; bad rows go to "
                             "MODEL_DIR/corrections/_errors/)")
    parser.add_argument("--allow-new-labels", action="store_true",
                        help="with --add-labels: a corrected_label the data does not have becomes a new label of "
                             "the model (default: such rows are refused, so that a typo cannot become a genre)")


def prepare_corrections(sheet: str, *, data_labels: list[str], model_dir: str, feature_config: dict,
                        allow_new_labels: bool) -> tuple[str | None, dict, dict]:
    """Checks the sheet's rows, featurizes the usable ones into MODEL_DIR/corrections/ and records the
    rest there. Returns (the featurize output, or None when no row teaches the head anything; what the
    model card says; reviews.json's content)."""
    from pipelines import featurize

    corrections, bad = review_sheet.read(sheet)
    refused_by_sheet = len(bad)
    by_lower = {label.lower(): label for label in data_labels}
    learn, not_music, new_labels = [], [], []
    for correction in corrections:
        if correction.not_music:
            if FileSystems.exists(correction.uri):
                not_music.append(correction)
            else:
                bad.append((correction.row, correction.track_id, correction.uri, "missing file"))
            continue
        label = by_lower.get(correction.label.lower())
        if label is None and not allow_new_labels:
            bad.append((correction.row, correction.track_id, correction.uri,
                        f"unknown label {correction.label!r}: the model's labels are {', '.join(data_labels)} "
                        f"(or `{NOT_MUSIC}`); --allow-new-labels teaches it a new one"))
            continue
        if label is None and correction.label not in new_labels:
            new_labels.append(correction.label)
        learn.append((correction, label or correction.label))

    root = pathlib.Path(model_dir)
    root.mkdir(parents=True, exist_ok=True)
    out = root / CORRECTIONS_DIR
    manifest = root / CORRECTIONS_MANIFEST
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["track_id", "uri", "genre"])
    writer.writerows([(c.track_id, c.uri, label) for c, label in learn])
    manifest.write_text(buffer.getvalue())
    learned: set[str] = set()
    if learn:
        config_file = root / "corrections-feature-config.json"
        config_file.write_text(json.dumps(feature_config))
        featurize.run(["--input", str(manifest), "--output", str(out), "--splits", "100,0,0",
                       "--feature-config", str(config_file), "--label-source", "manifest", "--overwrite",
                       "--progress", "off"])
        config_file.unlink()
        learned = _featurized_tracks(out)
    else:
        out.mkdir(exist_ok=True)
    _write_bad_rows(out / ERRORS_DIR, sheet, bad)
    featurize_failed = [c.track_id for c, _ in learn if c.track_id not in learned]
    reviews = {c.track_id: {"label": label, "model_genre": c.model_genre} for c, label in learn
               if c.track_id in learned}
    reviews.update({c.track_id: {"label": None, "model_genre": c.model_genre} for c in not_music})
    summary = {
        "sheet": str(sheet),
        "reviewed_rows": len(corrections) + refused_by_sheet,
        "learned_from": len(reviews) - len(not_music),
        "not_music": len(not_music),
        "refused_rows": len(bad),
        "featurize_failed": len(featurize_failed),
        "new_labels": [label for label in new_labels if any(lab == label for c, lab in learn if c.track_id in learned)],
        "model_was_right": sum(1 for c, label in learn if c.track_id in learned and c.model_genre == label),
        "errors": str(out / ERRORS_DIR),
    }
    if bad or featurize_failed:
        _LOG.warning("train: %d review row(s) refused and %d track(s) not featurized; see %s",
                     len(bad), len(featurize_failed), out / ERRORS_DIR)
    return (str(out) if learned else None), summary, reviews


def _featurized_tracks(out: pathlib.Path) -> set[str]:
    """Track ids with training segments in a featurize output (from its examples; the metadata counts labels)."""
    import tensorflow as tf

    from schemas.examples import decode_example

    metadata = FeaturizeMetadata.from_json((out / METADATA_FILE).read_text())
    if metadata.segments("train") == 0:
        return set()
    files = [str(path) for path in sorted((out / "train").glob("part-*"))]
    return {decode_example(record.numpy())["track_id"]
            for record in tf.data.TFRecordDataset(files, compression_type="GZIP")}


def _write_bad_rows(errors_dir: pathlib.Path, sheet: str, bad: list[tuple[int, str, str, str]]) -> None:
    target = errors_dir / REVIEW_ERRORS
    if target.exists():
        target.unlink()
    if not bad:
        return
    errors_dir.mkdir(parents=True, exist_ok=True)
    rows = [Failure(uri or f"{sheet}#row{row}", track_id or f"{sheet}#row{row}", "review", reason).to_row()
            for row, track_id, uri, reason in sorted(bad)]
    pq.write_table(pa.Table.from_pylist(rows, schema=ERRORS_SCHEMA), target)


def main(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(prog="cattag train")
    add_arguments(parser)
    args = parser.parse_args(argv)
    cfg = task.config_from_args(args)
    if args.allow_new_labels and not args.add_labels:
        raise ValueError("--allow-new-labels goes with --add-labels")
    if not args.add_labels:
        return task.run(cfg)
    if cfg.backbone == "none":
        raise ValueError("--add-labels trains a head on a pretrained backbone; with --backbone none there is no "
                         "head to add reviewed tracks to (choose a --backbone)")
    from trainer.data import read_data_info

    info = read_data_info(cfg.data_dir)
    extra, summary, reviews = prepare_corrections(
        args.add_labels, data_labels=info.labels, model_dir=cfg.model_dir, feature_config=info.cfg.to_dict(),
        allow_new_labels=args.allow_new_labels)
    _LOG.info("train: %d reviewed track(s) to learn from, %d not music, %d row(s) refused",
              summary["learned_from"], summary["not_music"], summary["refused_rows"])
    card = task.run(dataclasses.replace(cfg, extra_data=(extra,) if extra else (), corrections=summary))
    (pathlib.Path(cfg.model_dir) / REVIEWS_ASSET).write_text(json.dumps(reviews, indent=1, sort_keys=True) + "\n")
    return card
