"""trainer/: input pipeline, models, metrics, a tiny real training run and its export."""

from __future__ import annotations

import json
import pathlib

import keras
import numpy as np
import pytest
import tensorflow as tf

from pipelines import synthetic
from schemas import examples
from schemas.features import FeatureConfig, FeatureConfigMismatch
from schemas.featurize_metadata import METADATA_FILE
from schemas.model_assets import read_model_assets
from trainer import evaluate, models
from trainer.data import Augment, make_dataset, read_data_info
from trainer.task import TrainConfig, choose_device, run


@pytest.fixture(scope="module")
def data_dir(synthetic_features) -> str:
    return synthetic_features


@pytest.fixture(scope="module")
def trained(small_model) -> tuple[str, dict]:
    return small_model


def test_training_batches_have_the_expected_shapes_and_labels(data_dir):
    info = read_data_info(data_dir)
    assert info.labels == sorted(synthetic.STYLES)
    mel, label, weight = next(iter(make_dataset(data_dir, "train", info=info, batch_size=8, training=True)))
    assert mel.shape == (8, *info.cfg.mel_shape) and mel.dtype == tf.float32
    assert label.shape == (8, len(info.labels))
    np.testing.assert_allclose(label.numpy().sum(axis=1), 1.0)
    assert weight.shape == (8,)


def test_evaluation_batches_keep_track_ids_and_label_ids_in_order(data_dir):
    info = read_data_info(data_dir)
    seen = 0
    for batch in make_dataset(data_dir, "test", info=info, batch_size=16, training=False):
        ids = batch[examples.LABEL_ID].numpy()
        names = [t.decode().split("/")[0] for t in batch[examples.TRACK_ID].numpy()]
        assert [info.labels[i] for i in ids] == names  # track ids are style/name: the label is the folder
        seen += len(ids)
    assert seen == info.segments("test") > 0


def test_augment_masks_shifts_and_mixes_without_changing_shapes():
    tf.random.set_seed(1)
    mel = tf.random.normal([16, 130, 128], -30, 10)
    label = tf.one_hot(tf.range(16) % 4, 4)
    out_mel, out_label, out_weight = Augment()(mel, label, tf.ones([16]))
    assert out_mel.shape == mel.shape and out_label.shape == label.shape and out_weight.shape == (16,)
    np.testing.assert_allclose(out_label.numpy().sum(axis=1), 1.0, atol=1e-5)
    masked = Augment(gain_db=0, mixup_alpha=0, time_masks=1, freq_masks=0, time_mask_frames=30)(
        mel, label, tf.ones([16]))[0].numpy()
    assert (masked == mel.numpy().mean()).any(axis=(1, 2)).sum() > 0  # some rows carry a mask


def test_class_weights_are_inverse_frequency(data_dir):
    info = read_data_info(data_dir)
    weights = info.class_weights()
    per_label = np.array([info.counts["train"].get(label, {}).get("segments", 0) for label in info.labels])
    assert weights.shape == (len(info.labels),)
    np.testing.assert_allclose(weights * per_label, per_label.sum() / len(info.labels), rtol=1e-5)


@pytest.mark.parametrize("arch", sorted(models.ARCHITECTURES))
def test_every_architecture_has_an_embedding_before_the_softmax(arch):
    model = models.build(arch, mel_shape=(130, 128), n_classes=5, mel_mean=np.zeros(128), mel_std=np.ones(128))
    assert model.output.shape == (None, 5)
    assert model.get_layer(models.EMBEDDING).output.shape[-1] >= 32
    outputs = models.with_embedding(model)(np.zeros((2, 130, 128), np.float32))
    assert outputs[models.PROBABILITIES].shape == (2, 5)


def test_metrics_on_hand_made_predictions():
    labels = ["a", "b", "c"]
    # segments of tracks t1 (a), t2 (b), t3 (c): t1 has one wrong segment, t3 is wrong overall.
    track_ids = np.array(["t1", "t1", "t1", "t2", "t2", "t3", "t3"])
    label_ids = np.array([0, 0, 0, 1, 1, 2, 2])
    probabilities = np.array([
        [0.8, 0.1, 0.1], [0.7, 0.2, 0.1], [0.2, 0.7, 0.1],
        [0.1, 0.8, 0.1], [0.2, 0.6, 0.2],
        [0.6, 0.1, 0.3], [0.5, 0.2, 0.3],
    ])
    metrics = evaluate.evaluate_predictions(track_ids, label_ids, probabilities, labels)
    assert metrics["segment_accuracy"] == pytest.approx(4 / 7)
    assert metrics["track_accuracy"] == pytest.approx(2 / 3)
    assert metrics["confusion"] == [[1, 0, 0], [0, 1, 0], [1, 0, 0]]
    assert metrics["per_class"]["a"] == {"precision": 0.5, "recall": 1.0, "f1": pytest.approx(2 / 3), "support": 1}
    assert metrics["per_class"]["c"]["f1"] == 0.0
    assert metrics["macro_f1"] == pytest.approx((2 / 3 + 1 + 0) / 3)


def test_track_embeddings_are_l2_normalized_means():
    tracks = evaluate.track_level(np.array(["x", "x", "y"]), np.array([0, 0, 1]), np.eye(3)[:, :2],
                                  embeddings=np.array([[3.0, 0], [3.0, 0], [0, -2.0]]))
    np.testing.assert_allclose(tracks["embedding"], [[1, 0], [0, -1]])


def test_tiny_training_run_exports_a_servable_model(data_dir, trained):
    model_dir, card = trained
    loaded = tf.saved_model.load(model_dir)
    info = read_data_info(data_dir)
    out = loaded.serve(tf.zeros([3, *info.cfg.mel_shape]))
    assert out["probabilities"].shape == (3, len(info.labels))
    np.testing.assert_allclose(out["probabilities"].numpy().sum(axis=1), 1.0, atol=1e-5)
    assert out["embedding"].shape == (3, 128)

    serialized = [examples.encode_example(track_id="t", segment_index=i, label_id=0, label="x",
                                          mel=np.full(info.cfg.mel_shape, -40.0, np.float32)) for i in range(2)]
    out = loaded.serve_examples(tf.constant(serialized))
    assert out["track_id"].numpy().tolist() == [b"t", b"t"] and out["segment_index"].numpy().tolist() == [0, 1]

    assets = read_model_assets(model_dir)
    assert assets.labels == info.labels and assets.cfg == info.cfg
    assert card.embedding_dim == out["embedding"].shape[-1]
    # The typicality reference: a unit centroid per label and a threshold the tagger flags below.
    centroids = np.asarray(assets.typicality["centroids"])
    assert centroids.shape == (len(info.labels), card.embedding_dim)
    np.testing.assert_allclose(np.linalg.norm(centroids, axis=1), 1.0, atol=1e-5)
    assert -1.0 <= assets.typicality["threshold"] <= 1.0
    assert card.model_version.startswith("cnn1d-") and card.feature_version == info.cfg.version
    assert card.training["epochs_run"] == 2 and card.training["examples_per_s"] > 0
    metrics = json.loads((pathlib.Path(model_dir) / "metrics.json").read_text())
    assert 0.0 <= metrics["track_accuracy"] <= 1.0 and metrics["tracks"] > 0
    for plot in ("training_curves.png", "confusion_matrix.png", "embeddings_pca.png"):
        assert (pathlib.Path(model_dir) / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", plot
    assert (pathlib.Path(model_dir) / "history.csv").read_text().count("\n") == 3
    assert any((pathlib.Path(model_dir) / "logs").rglob("*tfevents*"))


def test_mismatching_feature_configs_are_refused(data_dir, trained, tmp_path):
    model_dir, _ = trained
    other = FeatureConfig(n_mels=64)
    with pytest.raises(FeatureConfigMismatch, match="n_mels: 96 \\(expected 64\\)"):
        read_data_info(data_dir, expected=other)
    # Data featurized with another config, evaluated with this model.
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    metadata = json.loads((pathlib.Path(data_dir) / METADATA_FILE).read_text())
    (foreign / METADATA_FILE).write_text(json.dumps({**metadata, "feature_config": other.to_dict()}))
    with pytest.raises(FeatureConfigMismatch, match="refusing to mix model and data"):
        evaluate.evaluate_model(model_dir, str(foreign))
    # Training into a model directory that holds a model for another config.
    with pytest.raises(FeatureConfigMismatch, match="choose another --model-dir"):
        run(TrainConfig(data_dir=str(foreign), model_dir=model_dir, epochs=1))


def test_device_choice_follows_the_hardware():
    gpus = tf.config.list_physical_devices("GPU")
    try:
        device = choose_device("auto", "auto")
        if gpus:  # the device machine: GPUs, MirroredStrategy, mixed precision
            assert "GPU" in device.description and device.mixed_precision
            assert keras.mixed_precision.global_policy().name == "mixed_float16"
        else:  # CI: the CPU, float32, and a clear error when a GPU is demanded
            assert device.description == "CPU" and not device.mixed_precision
            assert keras.mixed_precision.global_policy().name == "float32"
            with pytest.raises(ValueError, match="sees no GPU"):
                choose_device("gpu", "auto")
    finally:
        keras.mixed_precision.set_global_policy("float32")
