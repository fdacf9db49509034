"""The pretrained path end to end: zero-shot tagging with musicnn-msd on real music, and the default
`cattag train` (a head on the backbone), exported as one model that tag and evaluate use as any other."""

from __future__ import annotations

import json
import pathlib
import shutil

import numpy as np
import pytest
import tensorflow as tf

from pipelines import featurize, tag
from schemas import presets
from schemas.features import FeatureConfig, FeatureConfigMismatch
from schemas.featurize_metadata import METADATA_FILE
from schemas.model_assets import read_model_assets
from schemas.tag_output import TagOutput, read_tables
from tests.conftest import make_bad_files
from trainer import evaluate, musicnn, transfer
from trainer.task import TrainConfig, run

MUSIC = ("Kevin_MacLeod_-_Vibe_Ace.ogg", "bensound-thejazzpiano.mp3", "admiralbob77_-_Choice_-_Drum-bass.ogg",
         "bensound-dubstep.mp3")


@pytest.fixture(scope="module")
def transfer_model(synthetic_features, pretrained_cache, tmp_path_factory) -> tuple[str, dict]:
    model_dir = str(tmp_path_factory.mktemp("transfer"))
    card = run(TrainConfig(data_dir=synthetic_features, model_dir=model_dir, epochs=8, verbose=0))
    return model_dir, card


@pytest.fixture(scope="module")
def zero_shot(catalogue_sample_dir, pretrained_cache, tmp_path_factory):
    """Real music from the catalogue sample, plus every kind of broken file, tagged with no training."""
    root = tmp_path_factory.mktemp("zero-shot-input")
    for name in MUSIC:
        shutil.copy(catalogue_sample_dir / name, root / name)
    bad = make_bad_files(root / "bad")
    output = tmp_path_factory.mktemp("zero-shot-tags")
    result = tag.run(["--input", str(root), "--model", "musicnn-msd", "--output", str(output), "--top-k", "5"])
    return root, bad, output, result


def test_the_default_model_is_a_head_on_the_pretrained_backbone(transfer_model, synthetic_features):
    model_dir, card = transfer_model
    info = json.loads((pathlib.Path(synthetic_features) / METADATA_FILE).read_text())
    assert card.arch == "musicnn-msd-head" and card.model_version.startswith("musicnn-msd-head-")
    assert card.backbone["name"] == "musicnn-msd" and card.backbone["source"]["package"] == "musicnn"
    assert card.embedding_dim == len(info["labels"]) + 200  # [probabilities, 0.5 x unit(penultimate)]
    assert card.training["epochs_run"] == 8  # a fixed schedule: no early stop on a tiny validation split
    assert card.metrics["track_accuracy"] >= 0.75  # four synthetic styles are easy for musicnn's features
    assets = read_model_assets(model_dir)
    assert assets.typicality is not None and len(assets.typicality["centroids"]) == len(info["labels"])
    assert assets.typicality["offset"] == len(info["labels"])  # typicality of the backbone part: how it sounds


def test_the_export_needs_nothing_but_itself(transfer_model, synthetic_features, tmp_path):
    model_dir, card = transfer_model
    moved = tmp_path / "elsewhere"
    shutil.copytree(model_dir, moved)
    model = tf.saved_model.load(str(moved))
    mel = np.random.default_rng(0).uniform(0, 3, (5, 187, 96)).astype(np.float32)
    out = model.serve(mel)
    np.testing.assert_allclose(out["probabilities"].numpy().sum(axis=1), 1.0, atol=1e-5)
    embedding = out["embedding"].numpy()
    assert embedding.shape == (5, card.embedding_dim)
    np.testing.assert_allclose(embedding[:, :len(card.labels)], out["probabilities"].numpy(), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(embedding[:, len(card.labels):], axis=1), transfer.SOUND_WEIGHT,
                               atol=1e-4)
    metrics = evaluate.evaluate_model(str(moved), synthetic_features, split="test")
    assert metrics["track_accuracy"] == card.metrics["track_accuracy"]


def test_the_backbone_refuses_data_made_with_another_feature_config(synthetic_features, pretrained_cache, tmp_path):
    foreign = tmp_path / "foreign"
    shutil.copytree(synthetic_features, foreign)
    metadata = json.loads((foreign / METADATA_FILE).read_text())
    metadata["feature_config"] = FeatureConfig().to_dict()
    (foreign / METADATA_FILE).write_text(json.dumps(metadata))
    with pytest.raises(FeatureConfigMismatch, match="needs data featurized with `--feature-config musicnn`"):
        run(TrainConfig(data_dir=str(foreign), model_dir=str(tmp_path / "m"), epochs=1, verbose=0))


def test_fine_tuning_trains_the_backbone_dense_layer_and_nothing_else_of_it(synthetic_features, pretrained_cache,
                                                                           tmp_path):
    card = run(TrainConfig(data_dir=synthetic_features, model_dir=str(tmp_path / "m"), epochs=2, fine_tune=True,
                           fine_tune_epochs=1, verbose=0))
    assert card.backbone["fine_tuned"] == list(transfer.FINE_TUNED_LAYERS)
    original, _ = transfer.load_backbone("musicnn-msd", FeatureConfig.from_dict(card.feature_config))
    exported = tf.saved_model.load(str(tmp_path / "m"))
    variables = {v.path if hasattr(v, "path") else v.name: v.numpy() for v in exported.variables}

    def exported_weight(layer: str, weight: str) -> np.ndarray:
        matches = [value for name, value in variables.items() if f"{layer}/{weight}" in name]
        assert len(matches) == 1, (layer, weight, sorted(variables)[:5])
        return matches[0]

    assert not np.allclose(exported_weight("penultimate_dense", "kernel"),
                           original.get_layer("penultimate_dense").kernel.numpy())
    for frozen in ("timbral_74_conv", "midend3_conv", "logits"):
        np.testing.assert_array_equal(exported_weight(frozen, "kernel"), original.get_layer(frozen).kernel.numpy())


def test_zero_shot_tags_every_input_or_reports_it(zero_shot):
    root, bad, output, result = zero_shot
    rows = tag.read_tags(str(output)).to_pylist()
    errors = {pathlib.Path(r["uri"]).name: r["stage"] for r in
              read_tables(TagOutput(str(output)).error_files()).to_pylist()}
    silent = {name for name, stage in bad.items() if stage == "segment"}
    assert {pathlib.Path(r["uri"]).name for r in rows} == set(MUSIC) | silent
    assert errors == {name: stage for name, stage in bad.items() if name not in silent}
    assert result.inputs == len(MUSIC) + len(bad) and result.failed == len(errors)


def test_zero_shot_rows_carry_the_50_tags_thresholded_and_a_genre(zero_shot):
    _, _, output, result = zero_shot
    info = json.loads((presets.cached("musicnn-msd") / presets.PRESET_FILE).read_text())
    table = tag.read_tags(str(output))
    assert json.loads(table.schema.metadata[b"cattag.labels"]) == info["labels"]
    for row in table.to_pylist():
        if row["review_reason"] == "silent":
            assert row["genre"] is None and row["tags"] is None
            continue
        scores = np.array(row["probabilities"])
        assert scores.shape == (50,) and 0 <= scores.min() and scores.max() <= 1
        assert scores.sum() > 0.1 and abs(scores.sum() - 1.0) > 1e-3  # independent sigmoid scores, not a softmax
        assert row["genre"] in info["genre_labels"]
        assert row["confidence"] == pytest.approx(max(s for s, label in zip(scores, info["labels"], strict=True)
                                                      if label in info["genre_labels"]), abs=1e-6)
        carried = [(t["label"], t["score"]) for t in row["tags"]]
        assert carried == sorted(carried, key=lambda t: -t[1])
        assert {label for label, _ in carried} == {label for label, s in zip(info["labels"], scores, strict=True)
                                                  if s >= 0.2}
        assert len(row["top_k"]) == 5 and len(row["embedding"]) == 200
    by_name = {pathlib.Path(r["uri"]).name: r for r in table.to_pylist()}
    # Real music the MSD tags know well: a solo jazz piano and a dubstep track.
    assert by_name["bensound-thejazzpiano.mp3"]["genre"] == "jazz"
    assert by_name["bensound-dubstep.mp3"]["genre"] in ("electronic", "electro", "electronica", "dance")
    assert result.model_version.startswith("musicnn-msd-")


def test_a_higher_tag_threshold_carries_fewer_tags(zero_shot, tmp_path):
    root, _, output, _ = zero_shot
    strict = tag.run(["--input", str(root), "--model", "musicnn-msd", "--output", str(tmp_path / "strict"),
                      "--tag-threshold", "0.6"])
    loose_rows = {r["track_id"]: r for r in tag.read_tags(str(output)).to_pylist()}
    strict_rows = {r["track_id"]: r for r in tag.read_tags(strict.output).to_pylist()}
    assert strict_rows.keys() == loose_rows.keys()
    fewer = 0
    for track, row in strict_rows.items():
        if row["tags"] is None:
            continue
        assert all(t["score"] >= 0.6 for t in row["tags"])
        assert len(row["tags"]) <= len(loose_rows[track]["tags"])
        fewer += len(row["tags"]) < len(loose_rows[track]["tags"])
    assert fewer >= 1
    with pytest.raises(ValueError, match="--tag-threshold 1.5"):
        tag.run(["--input", str(root), "--model", "musicnn-msd", "--output", str(tmp_path / "x"), "--tag-threshold", "1.5"])


def test_tagging_with_the_transfer_model_uses_its_genres(transfer_model, tmp_path):
    from pipelines import synthetic

    model_dir, card = transfer_model
    synthetic.write_catalogue(tmp_path / "music", tracks_per_style=1, seconds=7.0)
    result = tag.run(["--input", str(tmp_path / "music"), "--model", model_dir, "--output", str(tmp_path / "tags")])
    rows = tag.read_tags(result.output).to_pylist()
    assert len(rows) == 4 and {r["genre"] for r in rows} <= set(card.labels)
    assert all(len(r["embedding"]) == card.embedding_dim for r in rows)
    assert all(r["tags"] == ([] if r["low_confidence"] else [{"label": r["genre"], "score": r["confidence"]}])
               for r in rows)


def test_featurize_defaults_to_the_backbones_config(tmp_path):
    from pipelines import synthetic

    synthetic.write_catalogue(tmp_path / "music", tracks_per_style=1, seconds=4.0)
    result = featurize.run(["--input", str(tmp_path / "music"), "--output", str(tmp_path / "f"), "--progress", "off"])
    assert result.feature_version == presets.PRESETS["musicnn-msd"].cfg.version
    v1 = featurize.run(["--input", str(tmp_path / "music"), "--output", str(tmp_path / "g"), "--progress", "off",
                        "--feature-config", "cattag-v1"])
    assert v1.feature_version == FeatureConfig().version
    assert musicnn.EMBEDDING_OUTPUT == musicnn.PENULTIMATE


def test_zero_shot_reruns_with_skip_existing_add_nothing(zero_shot):
    root, _, output, first = zero_shot
    again = tag.run(["--input", str(root), "--model", "musicnn-msd", "--output", str(output), "--skip-existing"])
    assert again.tagged == 0 and again.skipped == first.tagged
    assert tag.read_tags(str(output)).num_rows == first.tagged
