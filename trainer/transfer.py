"""Transfer learning on a pretrained backbone: what `cattag train` does by default.

    TFRecord segments -> backbone (frozen; run once per segment) -> features: penultimate + taggram
        -> head: standardize -> dropout -> Dense 128 ReLU -> dropout -> softmax `probabilities`
    [--fine-tune: then the backbone's dense layer trains too, end to end on the log-mels]
    export: one Keras model, log-mel -> backbone -> head, so the SavedModel needs nothing else;
        its embedding is [probabilities, 0.5 x unit(backbone penultimate)] (GenreSoundEmbedding)

The backbone's features are computed once and the head trains on them in memory: seconds for a
few thousand segments on a CPU, where training a CNN from scratch takes minutes and, on little data,
ends far less accurate (bench/RESULTS.md). The head's inputs and sizes were chosen once, by 5-fold
cross-validation on GTZAN-dev, from a few standard options (bench/accuracy_cv.py).
"""

from __future__ import annotations

import dataclasses
import logging
import time

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from schemas import examples
from schemas.features import FeatureConfig, FeatureConfigMismatch, check_compatible
from trainer import models, musicnn, pretrained
from trainer.data import Augment, DataInfo, labelled_segments, make_dataset

_LOG = logging.getLogger(__name__)

HEAD_INPUTS = (musicnn.PENULTIMATE, musicnn.TAGGRAM)
HEAD_UNITS = 128
HEAD_DROPOUT = 0.5
HEAD_L2 = 1e-3
# How much the backbone's sound counts in the stored embedding beside the genre posterior (0.5 or 1.0
# measured; bench/RESULTS.md): genre agreement first, then the nearest sound within it.
SOUND_WEIGHT = 0.5
# The backbone's only dense hidden layer: what --fine-tune trains besides the head. Its batch norms
# stay frozen (inference mode): a few hundred segments would drag their statistics off.
FINE_TUNED_LAYERS = ("penultimate_dense",)


@keras.saving.register_keras_serializable(package="cattag")
class GenreSoundEmbedding(layers.Layer):
    """[probabilities, backbone embedding] -> [probabilities, weight x unit(backbone embedding)].

    A transfer model's stored embedding. The head's hidden layer measured worse for finding
    same-genre tracks than its genre posterior (0.76 vs 0.86-0.89 precision@5 on held-out GTZAN-dev
    tracks), and the posterior alone is 10 numbers that cannot tell two rock tracks apart; the
    backbone's own embedding adds how the music sounds (0.72 zero-shot)."""

    def __init__(self, weight: float = SOUND_WEIGHT, **kwargs):
        super().__init__(**kwargs)
        self.weight = weight

    def call(self, inputs):
        probabilities, sound = inputs
        unit = sound / keras.ops.maximum(keras.ops.norm(sound, axis=-1, keepdims=True), 1e-12)
        return keras.ops.concatenate([probabilities, self.weight * unit], axis=-1)

    def get_config(self):
        return {**super().get_config(), "weight": self.weight}


@dataclasses.dataclass(frozen=True)
class SegmentFeatures:
    x: np.ndarray  # float32 [segments, features]
    label_id: np.ndarray  # int64 [segments]
    track_id: np.ndarray  # bytes [segments]


@dataclasses.dataclass(frozen=True)
class Fitted:
    """What task.run needs from either way of training."""

    model: keras.Model  # log-mel -> probabilities, with a layer named `embedding`
    history: dict[str, list[float]]
    monitor: str
    throughput: dict[str, float]
    card: dict  # what the model card says of the backbone and head
    embedding_dim: int
    serving: keras.Model | None = None  # log-mel -> {probabilities, embedding}; None: models.with_embedding(model)
    typicality_offset: int = 0  # where the embedding's sound part starts (aggregate.Typicality)


def load_backbone(name: str, data_cfg: FeatureConfig) -> tuple[keras.Model, dict]:
    """The cached backbone, refusing data featurized with another config."""
    backbone, info = pretrained.load_backbone(name)
    try:
        check_compatible(FeatureConfig.from_dict(info["feature_config"]), data_cfg, what="the training data")
    except FeatureConfigMismatch as err:
        raise FeatureConfigMismatch(f"--backbone {name} needs data featurized with `--feature-config musicnn` "
                                    f"(or choose --backbone none): {err}") from err
    backbone.trainable = False
    return backbone, info


def feature_extractor(backbone: keras.Model) -> keras.Model:
    """log-mel -> the concatenated HEAD_INPUTS of the backbone (its output tensor is what the
    exported model feeds the head, so the backbone's layers appear once in it)."""
    outputs = [backbone.output[name] for name in HEAD_INPUTS]
    return keras.Model(backbone.input, layers.Concatenate(name="head_inputs")(outputs), name="backbone_features")


def segment_features(extractor: keras.Model, data_dir: str, split: str, *, info: DataInfo,
                     batch_size: int = 64) -> SegmentFeatures:
    """The backbone features of a split's labelled segments, computed once."""
    run = tf.function(lambda mel: extractor(mel, training=False))
    xs, label_ids, track_ids = [], [], []
    for batch in make_dataset(data_dir, split, info=info, batch_size=batch_size, training=False):
        labelled = batch[examples.LABEL_ID].numpy() >= 0
        if labelled.any():
            xs.append(run(batch[examples.MEL][labelled]).numpy())
            label_ids.append(batch[examples.LABEL_ID].numpy()[labelled])
            track_ids.append(batch[examples.TRACK_ID].numpy()[labelled])
    if not xs:
        return SegmentFeatures(np.zeros((0, extractor.output.shape[-1]), np.float32), np.zeros(0, np.int64),
                               np.zeros(0, object))
    return SegmentFeatures(np.concatenate(xs), np.concatenate(label_ids), np.concatenate(track_ids))


def head_layers(*, train_x: np.ndarray, n_classes: int) -> list[layers.Layer]:
    """The head, standardizing with the training features' statistics (so the export needs nothing else)."""
    variance = np.maximum(train_x.var(axis=0), 1e-6)
    regularizer = keras.regularizers.L2(HEAD_L2)
    return [
        layers.Normalization(axis=-1, mean=train_x.mean(axis=0), variance=variance, name="head_normalize"),
        layers.Dropout(HEAD_DROPOUT, name="head_dropout_in"),
        layers.Dense(HEAD_UNITS, activation="relu", kernel_regularizer=regularizer, name="head_hidden"),
        layers.Dropout(HEAD_DROPOUT, name="head_dropout"),
        layers.Dense(n_classes, activation="softmax", dtype="float32", kernel_regularizer=regularizer,
                     name=models.PROBABILITIES),
    ]


def _apply(stack: list[layers.Layer], x):
    for layer in stack:
        x = layer(x)
    return x


def fit(cfg, info: DataInfo, strategy: tf.distribute.Strategy, *, callbacks: list, verbose) -> Fitted:
    """Trains a head (and with cfg.fine_tune the backbone's top) on `info`'s data. `cfg`: task.TrainConfig."""
    backbone, preset = load_backbone(cfg.backbone, info.cfg)
    extractor = feature_extractor(backbone)
    started = time.perf_counter()
    train = segment_features(extractor, cfg.data_dir, "train", info=info)
    validation = segment_features(extractor, cfg.data_dir, "validation", info=info) \
        if info.segments("validation") else None
    feature_s = time.perf_counter() - started
    segments = len(train.x) + (len(validation.x) if validation is not None else 0)
    _LOG.info("train: %s features of %d segments in %.1f s (%.0f segments/s)", cfg.backbone, segments, feature_s,
              segments / max(feature_s, 1e-9))

    n_classes = len(info.labels)
    weights = info.class_weights()
    with strategy.scope():
        stack = head_layers(train_x=train.x, n_classes=n_classes)
        features_in = keras.Input(shape=(train.x.shape[1],), name="segment_features")
        head = keras.Model(features_in, _apply(stack, features_in), name="head")
        head.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate),
                     loss=keras.losses.CategoricalCrossentropy(), metrics=["accuracy"])
    has_validation = validation is not None and len(validation.x) > 0
    monitor = "val_loss" if has_validation else "loss"
    # No early stopping: on a small catalogue the validation split is a track or two a genre, and
    # stopping on its loss ended the head's training after a few epochs, 3 points less accurate in
    # cross-validation than a fixed schedule with dropout and weight decay (bench/RESULTS.md).
    callbacks = [c for c in callbacks if not isinstance(c, keras.callbacks.EarlyStopping)]
    started = time.perf_counter()
    history = head.fit(
        train.x, keras.utils.to_categorical(train.label_id, n_classes), sample_weight=weights[train.label_id],
        validation_data=(validation.x, keras.utils.to_categorical(validation.label_id, n_classes))
        if has_validation else None,
        batch_size=cfg.batch_size, epochs=cfg.epochs, callbacks=callbacks, verbose=verbose, shuffle=True)
    head_s = time.perf_counter() - started
    history = dict(history.history)

    # The exported model: the backbone's own layers, then the same head layer objects (shared weights).
    with strategy.scope():
        probabilities = _apply(stack, extractor.output)
        model = keras.Model(backbone.input, probabilities, name=f"{cfg.backbone}_head".replace("-", "_"))
        embedding = GenreSoundEmbedding(dtype="float32", name=models.EMBEDDING)(
            [probabilities, backbone.output[musicnn.EMBEDDING_OUTPUT]])
        serving = keras.Model(backbone.input, {models.PROBABILITIES: probabilities, models.EMBEDDING: embedding})
    if cfg.fine_tune:
        history = _fine_tune(model, backbone, cfg, info, strategy, verbose=verbose)
    epochs = len(history["loss"])
    throughput = {"feature_s": round(feature_s, 2), "feature_segments_per_s": segments / max(feature_s, 1e-9),
                  "head_s": round(head_s, 2), "examples_per_s": len(train.x) * epochs / max(head_s, 1e-9)}
    card = {"backbone": {"name": cfg.backbone, "source": preset["source"], "licence": preset["licence"],
                         "head_inputs": list(HEAD_INPUTS), "fine_tuned": list(FINE_TUNED_LAYERS) if cfg.fine_tune else []},
            "head": {"units": HEAD_UNITS, "dropout": HEAD_DROPOUT, "l2": HEAD_L2,
                     "embedding": f"[probabilities, {SOUND_WEIGHT} x unit({musicnn.EMBEDDING_OUTPUT})]"}}
    return Fitted(model, history, monitor, throughput, card, int(embedding.shape[-1]), serving,
                  typicality_offset=n_classes)


def _fine_tune(model: keras.Model, backbone: keras.Model, cfg, info: DataInfo, strategy, *, verbose) -> dict:
    """A few epochs end to end on the log-mels, with the backbone's dense layer unfrozen, at a tenth
    of the learning rate. Returns the history, as the head's fit does."""
    backbone.trainable = True
    for layer in backbone.layers:
        layer.trainable = layer.name in FINE_TUNED_LAYERS
    with strategy.scope():
        model.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate * 0.1),
                      loss=keras.losses.CategoricalCrossentropy(), metrics=["accuracy"])
    train = make_dataset(cfg.data_dir, "train", info=info, batch_size=cfg.batch_size, training=True, seed=cfg.seed,
                         augment=Augment(gain_db=0.0) if cfg.augment else None)  # musicnn's log scale is not dB
    has_validation = info.segments("validation") > 0
    validation = (labelled_segments(cfg.data_dir, "validation", info=info, batch_size=cfg.batch_size)
                  if has_validation else None)
    stopper = keras.callbacks.EarlyStopping(monitor="val_loss" if has_validation else "loss", patience=2,
                                            restore_best_weights=True)
    done = model.fit(train, validation_data=validation, epochs=cfg.fine_tune_epochs, callbacks=[stopper],
                     verbose=verbose, shuffle=False)  # tf.data shuffles
    return dict(done.history)
