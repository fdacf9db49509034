"""The pretrained musicnn presets: fetched from the real PyPI wheel, converted to Keras 3, and
checked against the original package's outputs (tests/fixtures/musicnn_reference.npz, made by
tools/musicnn_reference/make_fixture.py in an isolated environment with the original's pins)."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

from schemas import presets
from schemas.features import MUSICNN, FeatureConfig, SegmentPolicy
from trainer import musicnn, pretrained
from transforms.audio import decode
from transforms.mel import log_mel, mel_basis

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "musicnn_reference.npz"
ORIGINAL_NAMES = {"musicnn-msd": "MSD_musicnn", "musicnn-mtt": "MTT_musicnn"}
SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="module")
def reference():
    with np.load(FIXTURE) as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="module", params=sorted(ORIGINAL_NAMES))
def converted(request, pretrained_cache):
    backbone, info = pretrained.load_backbone(request.param)
    return request.param, backbone, info


def test_fetch_caches_a_preset_with_its_licence_labels_and_config(pretrained_cache):
    folder = presets.cached("musicnn-msd")
    info = json.loads((folder / presets.PRESET_FILE).read_text())
    assert info["source"]["wheel_sha256"] == presets.MUSICNN_WHEEL.sha256
    assert len(info["labels"]) == 50 and "female vocalists" in info["labels"]
    assert set(info["genre_labels"]) < set(info["labels"])
    assert FeatureConfig.from_dict(info["feature_config"]) == MUSICNN
    assert "ISC" in (folder / "LICENSE.md").read_text() or "Permission" in (folder / "LICENSE.md").read_text()
    card = json.loads((folder / presets.MODEL_SUBDIR / "model.json").read_text())
    assert card["task"] == "multilabel" and card["labels"] == info["labels"]
    assert card["embedding_dim"] == 200 and card["model_version"].startswith("musicnn-msd-")
    assert "chosen for" in card["tag_threshold_rule"] and set(card["tag_thresholds"]) == set(info["labels"])
    assert presets.resolve_model("musicnn-msd") == str(folder / presets.MODEL_SUBDIR)
    assert presets.resolve_model("/some/model/dir") == "/some/model/dir"


@pytest.mark.parametrize("output", [musicnn.TAGGRAM, musicnn.PENULTIMATE, musicnn.MEAN_POOL, musicnn.MAX_POOL])
def test_keras_port_matches_the_original_package(converted, reference, output):
    """Within 1e-4, relative to the output's scale where that exceeds 1 (the mid end's max-pooled
    activations reach ~100, where float32 itself rounds at ~1e-5)."""
    name, backbone, info = converted
    original = ORIGINAL_NAMES[name]
    assert info["labels"] == reference[f"{original}/labels"].tolist()
    worst = 0.0
    for clip in range(len(reference["clips"])):
        ours = backbone(reference[f"{original}/{clip}/mel"], training=False)[output].numpy()
        expected = reference[f"{original}/{clip}/{output}"]
        worst = max(worst, float(np.abs(ours - expected).max()) / max(1.0, float(np.abs(expected).max())))
    print(f"{name} {output}: max error {worst:.2e} (relative to max(1, |output|)) over {len(reference['clips'])} clips")
    assert worst < 1e-4


def test_cattag_front_end_gives_the_original_features_and_tags(converted, reference):
    """Our decoder, resampler and log-mel on the real clips against the original's librosa front end.
    Frames 1..185 of the first patch use the same samples in both (the first and last frame see the
    segment's padding here and the track's neighbouring audio there)."""
    name, backbone, _ = converted
    original = ORIGINAL_NAMES[name]
    basis = mel_basis(MUSICNN)
    for clip, path in enumerate(reference["clips"]):
        audio = decode(str(SHARED / path), sample_rate_hz=MUSICNN.sample_rate_hz,
                       max_duration_s=SegmentPolicy().max_track_s)
        ours = log_mel(audio.samples[:MUSICNN.segment_samples], basis=basis)
        theirs = reference[f"{original}/{clip}/mel"][0]
        assert ours.shape == theirs.shape
        assert float(np.abs(ours[1:-1] - theirs[1:-1]).mean()) < 0.01, path
        tags = backbone(ours[None], training=False)[musicnn.TAGGRAM].numpy()[0]
        expected = reference[f"{original}/{clip}/taggram"][0]
        assert float(np.abs(tags - expected).max()) < 0.05, path
        assert np.argmax(tags) == np.argmax(expected), path


def test_conversion_fails_loudly_on_a_missing_or_extra_variable(reference, pretrained_cache):
    wheel_variables = {f"{scope}/{var}": np.zeros(1) for scope in musicnn.CHECKPOINT_NAMES.values()
                       for var in ("kernel",)}
    with pytest.raises(ValueError, match="checkpoint has no|has shape"):
        musicnn.assign_checkpoint(musicnn.build(), wheel_variables)
    folder = presets.cached("musicnn-msd")
    backbone = musicnn.build()
    backbone.load_weights(str(folder / presets.BACKBONE_WEIGHTS))
    full = {f"{scope}/{w.name}": w.numpy() for layer_name, scope in musicnn.CHECKPOINT_NAMES.items()
            for w in backbone.get_layer(layer_name).weights}
    musicnn.assign_checkpoint(musicnn.build(), full)  # every variable used: no error
    with pytest.raises(ValueError, match="not used by the Keras model: \\['extra/kernel'\\]"):
        musicnn.assign_checkpoint(musicnn.build(), {**full, "extra/kernel": np.zeros(3)})


def test_a_missing_preset_names_the_command_to_fetch_it(tmp_path, monkeypatch):
    monkeypatch.setenv("CATTAG_CACHE", str(tmp_path / "empty"))
    with pytest.raises(presets.NotCached, match="run `cattag pretrained fetch musicnn-msd`"):
        presets.resolve_model("musicnn-msd")


def test_a_wheel_with_the_wrong_checksum_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("CATTAG_CACHE", str(tmp_path / "cache"))
    fake = tmp_path / presets.MUSICNN_WHEEL.filename
    fake.write_bytes(b"not the wheel")
    with pytest.raises(ValueError, match="sha256 .* refusing it"):
        pretrained.fetch("musicnn-msd", wheel_file=str(fake))
    assert not presets.preset_dir("musicnn-msd").exists()
