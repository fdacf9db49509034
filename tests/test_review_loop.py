"""The review loop end to end, with real models, Beam pipelines, DuckDB and Chromium: a calibrated model
tags a catalogue, `cattag review` writes the sheet, a reviewer's labels (good and bad rows) go back in with
`cattag train --add-labels`, the new model re-tags, `cattag load` keeps the reviewed labels and the report
counts them."""

from __future__ import annotations

import csv
import json
import pathlib

import duckdb
import pyarrow.parquet as pq
import pytest

from pipelines import load, report, review, synthetic, tag, train
from schemas import review_sheet
from schemas import tags as tags_schema
from schemas.model_assets import read_model_assets
from tests.test_report import render
from trainer import evaluate
from trainer.task import TrainConfig, run


@pytest.fixture(scope="module")
def calibrated_model(synthetic_features, pretrained_cache, tmp_path_factory) -> str:
    model_dir = str(tmp_path_factory.mktemp("calibrated"))
    run(TrainConfig(data_dir=synthetic_features, model_dir=model_dir, epochs=8, verbose=0))
    return model_dir


def _style(uri: str) -> str:
    return pathlib.Path(uri).parent.name


@pytest.fixture(scope="module")
def loop(calibrated_model, synthetic_features, tmp_path_factory):
    """M1 tags 8 tracks; a reviewer fills the sheet (one right label, one correction, not music, an unknown label,
    a missing file, an empty row); M2 learns from it and re-tags with --skip-existing; all of it is loaded."""
    root = tmp_path_factory.mktemp("loop")
    synthetic.write_catalogue(root / "music", tracks_per_style=2, seconds=7.0)
    tag.run(["--input", str(root / "music"), "--model", calibrated_model, "--output", str(root / "tags"),
             "--progress", "off"])
    picked = review.main(["--tags", str(root / "tags"), "--output", str(root / "review.csv"), "--limit", "6"])
    with open(root / "review.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    styles = sorted({_style(r["uri"]) for r in rows})
    rows[0]["corrected_label"] = _style(rows[0]["uri"])
    other = next(s for s in styles if s != rows[1]["genre"])
    rows[1]["corrected_label"] = other  # a person says it is another of the model's genres
    rows[2]["corrected_label"] = "not music"
    rows[3]["corrected_label"] = "polka"  # not a label of the model
    rows[4]["corrected_label"] = _style(rows[4]["uri"])
    rows[4]["uri"] = str(root / "music" / "gone.wav")  # the file is missing
    with open(root / "review.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    m2 = root / "m2"
    card = train.main(["--data", synthetic_features, "--model-dir", str(m2), "--add-labels", str(root / "review.csv"),
                       "--epochs", "8"])
    retag = tag.run(["--input", str(root / "music"), "--model", str(m2), "--output", str(root / "tags"),
                     "--skip-existing", "--progress", "off"])
    url = f"duckdb:///{root / 'catalogue.duckdb'}"
    loaded = load.main(["--tags", str(root / "tags"), "--db", url])
    return {"root": root, "picked": picked, "rows": rows, "card": card, "m2": m2, "retag": retag, "url": url,
            "loaded": loaded, "reviewed": {rows[0]["track_id"]: rows[0]["corrected_label"],
                                           rows[1]["track_id"]: other, rows[2]["track_id"]: None}}


def test_a_calibrated_model_says_how_it_was_calibrated(calibrated_model, synthetic_features):
    assets = read_model_assets(calibrated_model)
    calibration = assets.card.calibration
    assert calibration == {**assets.calibration} and 0.0 < calibration["flag_below"] < 1.0
    assert set(calibration["heldout"]["schemes"]) == {"stratified", "sound clusters"}
    metrics = json.loads((pathlib.Path(calibrated_model) / "metrics.json").read_text())
    reliability = metrics["calibration"]["reliability"]
    assert sum(b["tracks"] for b in reliability) == metrics["tracks"]
    assert metrics["calibration"]["ece"] == pytest.approx(assets.card.metrics["ece"])
    assert (pathlib.Path(calibrated_model) / "reliability.png").stat().st_size > 1000
    combined = assets.card.head["combined_with"]
    assert combined["rule"] == "probabilities = 0.5 x head + 0.5 x tag profile"
    assert set(combined["heldout_accuracy_by_head_weight"]) == {"1", "0.5", "0"}
    assert set(combined["top_tags"]) == set(assets.labels)


def test_the_sheet_lists_the_most_doubtful_first_with_the_columns_a_reviewer_needs(loop):
    picked = loop["picked"]
    assert 1 <= len(picked) <= 6
    with open(loop["root"] / "review.csv", newline="") as handle:
        header = next(csv.reader(handle))
    assert header == list(review_sheet.COLUMNS)
    confidences = [float(r["confidence"]) for r in picked]
    assert confidences[0] == min(confidences)
    assert all(r["top_k"] and r["picked_for"] for r in picked)


def test_training_with_corrections_learns_the_good_rows_and_reports_the_bad(loop):
    corrections = loop["card"].corrections
    assert corrections["learned_from"] == 2 and corrections["not_music"] == 1
    assert corrections["refused_rows"] == 1 and corrections["featurize_failed"] == 1
    errors = pq.read_table(loop["m2"] / "corrections" / "_errors").to_pylist()
    by_stage = {row["stage"]: row for row in errors}
    assert "unknown label 'polka'" in by_stage["review"]["error"] and by_stage["review"]["track_id"] == loop["rows"][3]["track_id"]
    assert any(row["uri"].endswith("gone.wav") for row in errors)  # the featurize failure, with its stage
    reviews = json.loads((loop["m2"] / "assets" / "reviews.json").read_text())
    assert {track: review["label"] for track, review in reviews.items()} == loop["reviewed"]


def test_the_new_model_gives_reviewed_tracks_their_labels(loop):
    assert loop["retag"].tagged == 8 and loop["retag"].skipped == 0  # a new model version: every track again
    rows = pq.read_table(loop["root"] / "tags").to_pylist()
    newest = [r for r in rows if r["model_version"] == loop["card"].model_version]
    for row in newest:
        if row["track_id"] in loop["reviewed"]:
            assert row["genre"] == loop["reviewed"][row["track_id"]] and row[tags_schema.GENRE_SOURCE] == "review"
            assert row["confidence"] == 1.0 and not row["low_confidence"]
        else:
            assert row[tags_schema.GENRE_SOURCE] == "model" and row["model_genre"] == row["genre"]
    again = tag.run(["--input", str(loop["root"] / "music"), "--model", str(loop["m2"]), "--output",
                     str(loop["root"] / "tags"), "--skip-existing", "--progress", "off"])
    assert again.tagged == 0 and again.skipped == 8


def test_load_keeps_the_reviewed_label_for_every_model_version_and_a_reload_changes_nothing(loop):
    con = duckdb.connect(str(loop["root"] / "catalogue.duckdb"), read_only=True)
    reviews = dict(con.execute("SELECT track_id, genre FROM reviews").fetchall())
    con.close()
    assert reviews == loop["reviewed"]
    assert loop["loaded"].counts["reviews"] == 3
    con = duckdb.connect(str(loop["root"] / "catalogue.duckdb"), read_only=True)
    tagged = con.execute("SELECT track_id, model_version, genre, genre_source FROM tags").fetchall()
    con.close()
    assert len({version for _, version, _, _ in tagged}) == 2  # M1's rows and M2's
    for track_id, _, genre, source in tagged:
        if track_id in loop["reviewed"]:  # a person's label outranks M1's too
            assert (genre, source) == (loop["reviewed"][track_id], "review")
    assert load.main(["--tags", str(loop["root"] / "tags"), "--db", loop["url"]]).counts == loop["loaded"].counts


def test_the_report_counts_the_reviews(loop):
    out = loop["root"] / "report.html"
    report.main(["--tags", str(loop["root"] / "tags"), "--model", str(loop["m2"]), "--output", str(out)])
    dom = render(out)
    assert "tracks reviewed by a person" in dom and "Reliability of confidence" in dom
    assert "confidence below" in dom  # the review flag's threshold, from the model card


def test_a_new_label_needs_allow_new_labels(loop, synthetic_features, tmp_path):
    sheet = tmp_path / "new.csv"
    rows = [dict(r, corrected_label="polka") for r in loop["rows"][:2]]
    with open(sheet, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    card = train.main(["--data", synthetic_features, "--model-dir", str(tmp_path / "m3"), "--add-labels", str(sheet),
                       "--allow-new-labels", "--epochs", "4"])
    assert card.labels[-1] == "polka" and card.corrections["new_labels"] == ["polka"]
    metrics = evaluate.evaluate_model(str(tmp_path / "m3"), synthetic_features, split="test")
    assert metrics["tracks"] > 0  # the data's labels are a prefix of the model's
    with pytest.raises(ValueError, match="--backbone none"):
        train.main(["--data", synthetic_features, "--model-dir", str(tmp_path / "m4"), "--add-labels", str(sheet),
                    "--backbone", "none"])
