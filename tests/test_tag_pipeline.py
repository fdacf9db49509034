"""cattag tag end to end: a real model (trained in a fixture), real audio, real Beam, real Parquet."""

from __future__ import annotations

import csv
import datetime
import json
import os
import pathlib
import shutil

import apache_beam as beam
import numpy as np
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipelines import synthetic, tag
from schemas import tag_output, tags
from schemas.failure import ERRORS_DIR, Failure
from schemas.features import FeatureConfigMismatch
from schemas.model_assets import CONFIG_ASSET, read_model_assets
from tests.conftest import make_bad_files, make_good_files
from transforms.catalogue import CatalogueEntry
from transforms.records import TrackSummary
from transforms.tagging import (
    AggregateTrack,
    SegmentOutput,
    TagSettings,
    failed_batch_to_tracks,
)


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory) -> tuple[pathlib.Path, dict[str, str]]:
    """Synthetic music, odd-but-valid files, and every kind of bad file: name -> expected fate."""
    root = tmp_path_factory.mktemp("to-tag")
    fate = {}
    for path in synthetic.write_catalogue(root / "music", tracks_per_style=1, seconds=7.0):
        fate[f"music/{path.parent.name}/{path.name}"] = "row"
    for name in make_good_files(root / "good"):
        fate[f"good/{name}"] = "row"
    for name, stage in make_bad_files(root / "bad").items():
        # A silent track is no failure for the tagger: it gets a row flagged for review.
        fate[f"bad/{name}"] = "silent" if stage == "segment" else stage
    return root, fate


@pytest.fixture(scope="module")
def tagged(catalogue, small_model, tmp_path_factory):
    root, _ = catalogue
    output = tmp_path_factory.mktemp("tags")
    result = tag.run(["--input", str(root), "--model", small_model[0], "--output", str(output), "--top-k", "2"])
    return output, result


def rows_by_uri(output: pathlib.Path) -> dict[str, dict]:
    table = tag.read_tags(str(output))
    rows = table.to_pylist()
    assert len(rows) == len({row["uri"] for row in rows}), "duplicate rows"
    return {row["uri"]: row for row in rows}


def errors_by_uri(output: pathlib.Path) -> dict[str, dict]:
    return {row["uri"]: row for row in pq.read_table(str(output / ERRORS_DIR)).to_pylist()}


def relative(root: pathlib.Path, uri: str) -> str:
    return pathlib.Path(uri).relative_to(root).as_posix()


def test_every_input_ends_in_a_row_or_in_errors(catalogue, tagged):
    root, fate = catalogue
    output, result = tagged
    rows, errors = rows_by_uri(output), errors_by_uri(output)
    assert {relative(root, uri) for uri in rows} == {name for name, f in fate.items() if f in ("row", "silent")}
    assert {relative(root, uri): e["stage"] for uri, e in errors.items()} == \
        {name: f for name, f in fate.items() if f not in ("row", "silent")}
    assert all(e["error"] for e in errors.values())
    assert (result.tagged, result.failed, result.inputs) == (len(rows), len(errors), len(fate))


def test_rows_follow_the_declared_schema_and_the_model(tagged, small_model):
    output, result = tagged
    assets = read_model_assets(small_model[0])
    expected = tags.tags_schema(labels=assets.labels, embedding_dim=small_model[1].embedding_dim,
                                model_version=assets.model_version, feature_version=assets.cfg.version)
    for path in result.files:
        schema = pq.read_schema(path)
        assert schema.equals(expected, check_metadata=True)
        assert tags.labels_of(schema) == assets.labels
    for row in rows_by_uri(output).values():
        assert row["model_version"] == assets.model_version and row["feature_version"] == assets.cfg.version
        if row["review_reason"] == "silent":
            continue
        assert row["genre"] == row["top_k"][0]["label"] and len(row["top_k"]) == 2
        assert row["confidence"] == pytest.approx(max(row["probabilities"]))
        assert sum(row["probabilities"]) == pytest.approx(1.0, abs=1e-5)
        assert np.linalg.norm(row["embedding"]) == pytest.approx(1.0, abs=1e-5)
        assert row["n_segments"] >= 1 and row["duration_s"] > 0
        assert row["low_confidence"] == (row["review_reason"] is not None)


def test_a_silent_track_gets_a_flagged_row_without_a_guess(catalogue, tagged):
    root, _ = catalogue
    row = rows_by_uri(tagged[0])[str(root / "bad" / "silence.flac")]
    assert row["low_confidence"] and row["review_reason"] == "silent"
    assert row["genre"] is None and row["probabilities"] is None and row["n_segments"] == 0
    assert not any(row["embedding"])
    assert row["duration_s"] == pytest.approx(5.0)
    assert row["bpm"] is None and row["key"] is None and row["loudness_lufs"] is None
    assert "silent" in row["descriptor_notes"]
    assert row["health_flags"] == ["silent"]


def test_rows_carry_health_values_flags_and_a_fingerprint(catalogue, tagged):
    root, fate = catalogue
    rows = rows_by_uri(tagged[0])
    music = [row for uri, row in rows.items() if fate[relative(root, uri)] == "row" and row["duration_s"] >= 4.0]
    assert music
    for row in music:
        assert isinstance(row["health_flags"], list) and row["clipped_runs"] is not None, row["uri"]
        assert row["dc_offset"] < 0.01 and row["longest_gap_s"] is not None
        assert len(row["fingerprint"]) >= 10  # about 8 words a second (Chromaprint needs ~3 s to start)
    stereo = [row for row in rows.values() if "ch2" in row["uri"]]
    assert stereo and all(row["dual_mono"] for row in stereo)  # conftest's multi-channel tones repeat one channel


def test_rows_carry_tempo_key_and_loudness_of_the_same_decode_or_say_why_not(catalogue, tagged):
    root, fate = catalogue
    rows = rows_by_uri(tagged[0])
    music = [row for uri, row in rows.items() if fate[relative(root, uri)] == "row"]
    for row in music:
        assert row["loudness_lufs"] is not None and row["true_peak_dbtp"] is not None, row["uri"]
        # Every clip here is under 10 s: too short for a tempo, and the row says so rather than guessing.
        assert row["bpm"] is None and "bpm: shorter than 10 s" in row["descriptor_notes"]
    keyed = [row for row in music if row["key"] is not None]
    assert keyed and all(row["camelot"] and row["key_confidence"] > 0 for row in keyed)


def test_descriptors_and_health_off_leave_their_columns_null(catalogue, small_model, tmp_path):
    root, _ = catalogue
    folder = tmp_path / "two"
    folder.mkdir()
    for source in sorted((root / "music").rglob("*.*"))[:2]:
        shutil.copy(source, folder / source.name)
    tag.run(["--input", str(folder), "--model", small_model[0], "--output", str(tmp_path / "out"),
             "--descriptors", "off", "--health", "off", "--progress", "off"])
    rows = rows_by_uri(tmp_path / "out").values()
    assert len(rows) == 2
    assert all(row["loudness_lufs"] is None and row["key"] is None and row["descriptor_notes"] == "descriptors off"
               for row in rows)
    assert all(row["fingerprint"] is None and row["health_flags"] is None for row in rows)


def test_skip_existing_is_idempotent_and_adds_only_new_inputs(catalogue, small_model, tmp_path):
    root, _ = catalogue
    output = tmp_path / "tags"
    shutil.copytree(root / "music", tmp_path / "in" / "music")
    argv = ["--input", str(tmp_path / "in"), "--model", small_model[0], "--output", str(output), "--skip-existing"]
    first = tag.run(argv)
    before = rows_by_uri(output)
    again = tag.run(argv)
    assert again.tagged == 0 and again.skipped == first.tagged == len(before)
    assert rows_by_uri(output) == before

    synthetic_path = next((tmp_path / "in" / "music").rglob("*.flac"))
    shutil.copy(synthetic_path, tmp_path / "in" / "new.flac")
    third = tag.run(argv)
    after = rows_by_uri(output)
    assert third.tagged == 1 and set(after) - set(before) == {str(tmp_path / "in" / "new.flac")}
    assert {uri: after[uri] for uri in before} == before

    with pytest.raises(ValueError, match="already holds tags"):
        tag.run(argv[:-1])
    replaced = tag.run([*argv[:-1], "--overwrite"])
    assert replaced.tagged == len(rows_by_uri(output)) == len(after)


def test_skip_existing_tags_again_a_file_whose_content_changed(catalogue, small_model, tmp_path):
    root, _ = catalogue
    output = tmp_path / "tags"
    shutil.copytree(root / "music", tmp_path / "in")
    first, second, *_ = sorted((tmp_path / "in").rglob("*.flac"))
    argv = ["--input", str(tmp_path / "in"), "--model", small_model[0], "--output", str(output), "--skip-existing"]
    tag.run(argv)
    rows = [r for f in sorted(output.glob(tag_output.TAGS_GLOB)) for r in pq.read_table(f).to_pylist()]
    fingerprint = {r["uri"]: r[tags.FINGERPRINT] for r in rows}
    assert all(len(f or "") == 32 for f in fingerprint.values())

    shutil.copy(second, first)  # the same name, another track's content
    os.utime(second)  # touched, content unchanged: still held
    again = tag.run(argv)
    assert again.tagged == 1 and again.skipped == len(rows) - 1
    new = [r for f in again.files for r in pq.read_table(f).to_pylist()]
    assert [r["uri"] for r in new] == [str(first)]
    assert new[0][tags.FINGERPRINT] == fingerprint[str(second)] != fingerprint[str(first)]
    assert tag.run(argv).tagged == 0  # and now it is held with its new content


def test_a_model_whose_feature_config_cannot_be_reproduced_is_refused(catalogue, small_model, tmp_path):
    root, _ = catalogue
    model = tmp_path / "model"
    shutil.copytree(small_model[0], model)
    config = json.loads((model / CONFIG_ASSET).read_text())
    (model / CONFIG_ASSET).write_text(json.dumps({**config, "n_mels": 64}))  # edited, version left as it was
    with pytest.raises(FeatureConfigMismatch, match="parameters hash to"):
        tag.run(["--input", str(root / "music"), "--model", str(model), "--output", str(tmp_path / "out")])
    (model / CONFIG_ASSET).write_text(json.dumps({**config, "pre_emphasis": 0.97}))
    with pytest.raises(FeatureConfigMismatch, match="fields this cattag does not know"):
        tag.run(["--input", str(root / "music"), "--model", str(model), "--output", str(tmp_path / "out")])
    with pytest.raises(ValueError, match="not a cattag model"):
        tag.run(["--input", str(root / "music"), "--model", str(tmp_path), "--output", str(tmp_path / "out")])


def test_a_track_with_a_failed_segment_goes_to_errors_not_to_a_partial_row():
    settings = TagSettings(labels=("a", "b"), embedding_dim=2, model_version="m", feature_version="f",
                           tagged_at=datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC))
    ok, broken = CatalogueEntry("/x/ok.wav", "ok"), CatalogueEntry("/x/broken.wav", "broken")
    out = SegmentOutput(0, np.array([0.9, 0.1], np.float32), np.array([1.0, 0.0], np.float32))
    dead_letter = ([(("broken", 1), np.zeros((2, 2)))], (ValueError, "ValueError('bad batch')", []))
    with BeamTestPipeline() as pipeline:
        summaries = pipeline | "Summaries" >> beam.Create(
            [("ok", TrackSummary(ok, 3.0, 1, 0)), ("broken", TrackSummary(broken, 6.0, 2, 0))])
        outputs = pipeline | "Outputs" >> beam.Create([("ok", out), ("broken", out)])
        failed = pipeline | "Failed" >> beam.Create([dead_letter]) | beam.FlatMap(failed_batch_to_tracks)
        result = ({"summary": summaries, "segments": outputs, "failed": failed} | beam.CoGroupByKey()
                  | beam.ParDo(AggregateTrack(settings)).with_outputs(AggregateTrack.FAILED, main="rows"))
        assert_that(result.rows | beam.Map(lambda r: (r["track_id"], r["genre"])), equal_to([("ok", "a")]),
                    label="Rows")
        assert_that(result[AggregateTrack.FAILED],
                    equal_to([Failure("/x/broken.wav", "broken", "inference", "ValueError('bad batch')")]),
                    label="Failures")


def test_non_music_gets_a_row_and_sits_further_from_the_training_music(catalogue_sample_dir, small_model, tagged,
                                                                      tmp_path):
    """Speech, birdsong and a whale each get a row, with a typicality that is lower than that of
    music like the training data; the flag follows the model's calibrated threshold. (Whether a
    real genre model flags them all is measured in bench/non_music.py: a two-epoch model on
    synthetic styles says little about that.)"""
    with open(catalogue_sample_dir / "SOURCES.csv", newline="") as handle:
        kind = {row["file"]: row["kind"] for row in csv.DictReader(handle)}
    result = tag.run(["--input", str(catalogue_sample_dir), "--model", small_model[0], "--output", str(tmp_path)])
    rows = {pathlib.Path(uri).name: row for uri, row in rows_by_uri(tmp_path).items()}
    assert set(rows) == set(kind) and result.failed == 0
    threshold = read_model_assets(small_model[0]).typicality["threshold"]
    for row in rows.values():
        assert row["typicality"] is not None
        if row["typicality"] < threshold:
            assert row["low_confidence"] and row["review_reason"] == "unlike the training music"
    non_music = [rows[name]["typicality"] for name, k in kind.items() if k in ("speech", "nature")]
    in_distribution = [row["typicality"] for uri, row in rows_by_uri(tagged[0]).items() if "/music/" in uri]
    assert max(non_music) < np.median(in_distribution), (non_music, in_distribution)


def test_the_output_folder_reads_whole_as_the_tags_in_every_reader(tagged):
    """pandas and Arrow on OUT itself, Polars and DuckDB on OUT/*.parquet, as users read it: the tag
    rows and columns, not the errors (in OUT/_errors/, which dataset readers skip) nor the writer's
    temporary files."""
    import duckdb
    import pandas as pd
    import polars as pl
    import pyarrow.dataset as ds

    output, result = tagged
    assert list(output.glob(f"{ERRORS_DIR}/*.parquet"))  # this catalogue has failures
    expected = tag.read_tags(str(output))
    columns, n = expected.schema.names, expected.num_rows
    assert n == result.tagged
    arrow = ds.dataset(output, format="parquet").to_table()
    assert (arrow.num_rows, arrow.schema.names) == (n, columns)
    frame = pd.read_parquet(output)
    assert (len(frame), list(frame.columns)) == (n, columns)
    # Polars reads every file under a folder it is given, "_" folders too, and refuses a mix of
    # extensions: its users give it the folder's files, as DuckDB's do.
    polars_frame = pl.read_parquet(f"{output}/*.parquet")
    assert (polars_frame.height, polars_frame.columns) == (n, columns)
    count, names = duckdb.sql(f"SELECT count(*), any_value(track_id) FROM '{output}/*.parquet'").fetchall()[0]
    assert count == n and names in set(expected.column("track_id").to_pylist())
    assert len(pq.read_table(str(output / ERRORS_DIR)).schema.names) == 4  # uri, track_id, stage, error


def test_padded_batches_are_few_shapes_and_leave_the_outputs_unchanged(small_model):
    """A bundle's last batch is padded to a power of two (flat worker memory); the padding rows are
    dropped and each example's outputs are those of the example alone."""
    from transforms.inference import SavedModelHandler, padded_batch_size

    assert [padded_batch_size(n, 16) for n in (1, 2, 3, 5, 9, 16, 17)] == [1, 2, 4, 8, 16, 16, 17]
    assert {padded_batch_size(n, 16) for n in range(1, 17)} == {1, 2, 4, 8, 16}
    handler = SavedModelHandler(small_model[0], max_batch_size=16)
    assert handler.batch_elements_kwargs() == {"min_batch_size": 16, "max_batch_size": 16}
    model = handler.load_model()
    cfg = read_model_assets(small_model[0]).cfg
    examples_in = [np.random.default_rng(seed).normal(size=cfg.mel_shape).astype(np.float32)
                   for seed in range(3)]
    together = handler.run_inference(examples_in, model)  # padded to 4
    assert len(together) == 3
    for example, result in zip(examples_in, together, strict=True):
        alone = handler.run_inference([example], model)[0]
        np.testing.assert_allclose(result.inference["probabilities"], alone.inference["probabilities"], atol=1e-5)
        np.testing.assert_allclose(result.inference["embedding"], alone.inference["embedding"], atol=1e-4)
