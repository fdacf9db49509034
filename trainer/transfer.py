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
from trainer import models, musicnn, pretrained, tag_profile
from trainer.data import Augment, DataInfo, labelled_segments, make_dataset, read_data_info
from transforms import aggregate

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
TAGGRAM_SIZE = 50  # the backbone's tags: the last TAGGRAM_SIZE of the HEAD_INPUTS features
# The posterior is head_weight x the head's + the rest x the tag profile's (trainer/tag_profile.py).
# `--experts both` (the default) is their plain mean, chosen a priori and kept because it measured
# better than either alone (bench/RESULTS.md, "Away from home"): a weight chosen per training set on its
# held-out tracks was noisier (0.850 at home against 0.883). `head` and `tag-profile` keep one expert.
HEAD_WEIGHT = 0.5
EXPERTS = {"both": HEAD_WEIGHT, "head": 1.0, "tag-profile": 0.0}
# Cross-fitting for the confidence calibrator: each training track scored by a model of the other folds.
CALIBRATION_FOLDS = 5
HEAD_STEPS_PER_EXECUTION = 32


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


@keras.saving.register_keras_serializable(package="cattag")
class WeightedMean(layers.Layer):
    """[a, b] -> weight x a + (1 - weight) x b: the default model's two posteriors combined."""

    def __init__(self, weight: float = HEAD_WEIGHT, **kwargs):
        super().__init__(**kwargs)
        self.weight = weight
        # A variable, not only config: the model version hashes the weights, and two models that differ
        # only in how they combine their experts must not share one.
        self.mix = self.add_weight(shape=(), initializer=keras.initializers.Constant(weight), trainable=False,
                                   name="mix")

    def call(self, inputs):
        first, second = inputs
        return self.mix * keras.ops.cast(first, "float32") + (1.0 - self.mix) * keras.ops.cast(second, "float32")

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
    labels: list[str] | None = None  # the model's labels when they differ from the data's (corrections added some)
    heldout: dict[str, np.ndarray] | None = None  # cross-fitted track predictions (heldout_predictions)
    # The typicality reference (aggregate.typicality_reference), when fit computed it from its features;
    # None: task.run computes it with the export.
    typicality: dict | None = None


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
                     name="head_probabilities"),
    ]


def _apply(stack: list[layers.Layer], x):
    for layer in stack:
        x = layer(x)
    return x


@dataclasses.dataclass(frozen=True)
class TrainingSet:
    """The head's training data in memory: every labelled training segment's backbone features,
    label ids over `labels` (the data's labels, then any a reviewer added)."""

    features: SegmentFeatures
    labels: list[str]

    def class_weights(self) -> np.ndarray:
        """Inverse-frequency weights per label over segments, mean 1 over the present labels ("balanced")."""
        counts = np.bincount(self.features.label_id, minlength=len(self.labels)).astype(np.float64)
        present = counts > 0
        return np.where(present, counts.sum() / (present.sum() * np.maximum(counts, 1)), 0.0).astype(np.float32)


def training_set(extractor: keras.Model, cfg, info: DataInfo) -> TrainingSet:
    """The data's training segments, plus the corrections' (cfg.extra_data: featurize outputs of
    reviewed tracks, `pipelines/train.py`), whose labels are matched by name and may add new ones.
    A reviewed track's label outranks the data's: its segments in the data are left out."""
    train = segment_features(extractor, cfg.data_dir, "train", info=info)
    labels = list(info.labels)
    extra = []
    for extra_dir in cfg.extra_data:
        extra_info = read_data_info(extra_dir, expected=info.cfg)
        found = segment_features(extractor, extra_dir, "train", info=extra_info)
        for label in extra_info.labels:
            if label not in labels:
                labels.append(label)
        remap = np.array([labels.index(label) for label in extra_info.labels], np.int64)
        extra.append(SegmentFeatures(found.x, remap[found.label_id], found.track_id))
    if extra:
        reviewed = set(np.concatenate([e.track_id for e in extra]).tolist())
        keep = np.array([t not in reviewed for t in train.track_id.tolist()], bool)
        train = SegmentFeatures(*(np.concatenate([part[keep], *[getattr(e, name) for e in extra]])
                                  for part, name in ((train.x, "x"), (train.label_id, "label_id"),
                                                     (train.track_id, "track_id"))))
    return TrainingSet(train, labels)


def _head_model(train_x: np.ndarray, n_classes: int, learning_rate: float) -> tuple[keras.Model, list[layers.Layer]]:
    stack = head_layers(train_x=train_x, n_classes=n_classes)
    features_in = keras.Input(shape=(train_x.shape[1],), name="segment_features")
    head = keras.Model(features_in, _apply(stack, features_in), name="head")
    # Several steps per call: the head is so small that Keras's per-step overhead was most of its time.
    head.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=keras.losses.CategoricalCrossentropy(),
                 metrics=["accuracy"], steps_per_execution=HEAD_STEPS_PER_EXECUTION)
    return head, stack


def _taggram(x: np.ndarray) -> np.ndarray:
    """The taggram part of the concatenated HEAD_INPUTS features (penultimate first)."""
    return x[:, -TAGGRAM_SIZE:]


def _penultimate(x: np.ndarray) -> np.ndarray:
    return x[:, :-TAGGRAM_SIZE]


def heldout_predictions(data: TrainingSet, cfg, *, folds: int = CALIBRATION_FOLDS) -> dict[str, np.ndarray]:
    """Cross-fitted track predictions of the default model on its own training tracks, twice over:

    - stratified folds (by label): each track scored by a head and tag profile trained on the other
      folds: how the model does on music like its training music;
    - sound clusters (k-means on the tracks' backbone embeddings): each cluster scored by a model
      trained without it: music unlike anything it trained on, as a catalogue from other sources is
      (held-out accuracy falls with typicality here much as it does on music from elsewhere).

    The confidence calibrator and the review threshold are fitted on both, so that typicality
    carries its weight. Returns, per scored (track, scheme): label_id, the head's and the tag profile's posteriors,
    typicality against the centroids of the tracks its model trained on, and the scheme."""
    _, inverse = np.unique(data.features.track_id, return_inverse=True)
    sounds, track_label = _track_sounds_of(data.features)
    track_ids = np.unique(data.features.track_id)
    schemes = {"stratified": stratified_folds(track_ids, track_label, folds),
               "sound clusters": sound_clusters(sounds, folds)}
    parts = [_cross_fit(data, cfg, fold_of_track, inverse, sounds, track_label) | {"scheme": name}
             for name, fold_of_track in schemes.items()]
    merged = {key: np.concatenate([part[key] for part in parts]) for key in ("label_id", "head", "profile", "typicality")}
    merged["scheme"] = np.concatenate([[part["scheme"]] * len(part["label_id"]) for part in parts])
    return merged


def _cross_fit(data: TrainingSet, cfg, fold_of_track: np.ndarray, inverse: np.ndarray, sounds: np.ndarray,
               track_label: np.ndarray) -> dict[str, np.ndarray]:
    """Per fold: train on the other folds' tracks, score this fold's (a fold whose rest has fewer than two
    labels stays unscored)."""
    x, y = data.features.x, data.features.label_id
    n_classes = len(data.labels)
    fold = fold_of_track[inverse]
    head_posterior = np.zeros((len(x), n_classes), np.float32)
    profile_posterior = np.zeros((len(x), n_classes), np.float32)
    typicality = np.zeros(len(sounds))
    scored = np.zeros(len(sounds), bool)
    weights = data.class_weights()
    for k in np.unique(fold_of_track):
        test, train = fold == k, fold != k
        if len(np.unique(y[train])) < 2:
            continue
        head, _ = _head_model(x[train], n_classes, cfg.learning_rate)
        head.fit(x[train], keras.utils.to_categorical(y[train], n_classes), sample_weight=weights[y[train]],
                 batch_size=cfg.batch_size, epochs=cfg.epochs, verbose=0, shuffle=True)
        profile = tag_profile.fit(_taggram(x[train]), y[train], n_classes)
        head_posterior[test] = head.predict(x[test], batch_size=256, verbose=0)
        profile_posterior[test] = tag_profile.probabilities(profile, _taggram(x[test]))
        in_fold = fold_of_track == k
        centroids = aggregate.class_centroids(sounds[~in_fold], track_label[~in_fold], n_classes)
        typicality[in_fold] = (sounds[in_fold] @ centroids.T).max(axis=1)
        scored |= in_fold
    def by_track(posterior: np.ndarray) -> np.ndarray:
        tracks = np.zeros((len(sounds), n_classes))
        np.add.at(tracks, inverse, posterior)
        return (tracks / np.bincount(inverse).astype(np.float64)[:, None])[scored]

    return {"label_id": track_label[scored], "head": by_track(head_posterior), "profile": by_track(profile_posterior),
            "typicality": typicality[scored]}


def sound_clusters(sounds: np.ndarray, k: int, *, iterations: int = 50) -> np.ndarray:
    """Cluster per track: spherical k-means on unit embeddings, seeded deterministically by farthest
    points from the first track (no randomness: the same tracks give the same clusters)."""
    k = min(k, len(sounds))
    centres = [sounds[0]]
    for _ in range(1, k):
        similarity = np.max(np.stack(centres) @ sounds.T, axis=0)
        centres.append(sounds[int(np.argmin(similarity))])
    centres = np.stack(centres)
    assignment = np.zeros(len(sounds), np.int64)
    for _ in range(iterations):
        new = np.argmax(sounds @ centres.T, axis=1)
        if _ and np.array_equal(new, assignment):
            break
        assignment = new
        centres = np.stack([aggregate.unit_rows(sounds[assignment == c].sum(axis=0)) if (assignment == c).any()
                            else centres[c] for c in range(k)])
    return assignment


def _track_sounds(penultimate: np.ndarray, inverse: np.ndarray, n_tracks: int) -> np.ndarray:
    """Each track's typicality embedding as the tagger computes it from the export's sound part: the unit
    mean of its segments' unit penultimate vectors."""
    sums = np.zeros((n_tracks, penultimate.shape[1]))
    np.add.at(sums, inverse, aggregate.unit_rows(penultimate.astype(np.float64)))
    return aggregate.unit_rows(sums)


def stratified_folds(track_ids: np.ndarray, track_label: np.ndarray, folds: int) -> np.ndarray:
    """Fold per track: within each label, tracks in id order go round-robin (deterministic)."""
    fold = np.zeros(len(track_ids), np.int64)
    for offset, label in enumerate(np.unique(track_label)):  # rotated, so that small labels do not all start in fold 0
        members = np.flatnonzero(track_label == label)
        members = members[np.argsort(track_ids[members], kind="stable")]
        fold[members] = (np.arange(len(members)) + offset) % folds
    return fold


def heldout_accuracy(heldout: dict[str, np.ndarray], weights=(1.0, HEAD_WEIGHT, 0.0)) -> dict[str, float]:
    """Share of held-out tracks (both schemes) each mix gets right: what the model card shows of the two
    experts (head weight 1: the head alone; 0: the tag profile alone)."""
    return {f"{w:g}": float(np.mean(combine(heldout["head"], heldout["profile"], w).argmax(axis=1) == heldout["label_id"]))
            for w in weights}


def combine(head: np.ndarray, profile: np.ndarray, head_weight: float = HEAD_WEIGHT) -> np.ndarray:
    """The model's posterior: by default the mean of its two experts' (bench/RESULTS.md, "Away from home")."""
    return (head_weight * head + (1.0 - head_weight) * profile).astype(np.float32)


def fit(cfg, info: DataInfo, strategy: tf.distribute.Strategy, *, callbacks: list, verbose) -> Fitted:
    """Trains the head and tag profile (and with cfg.fine_tune the backbone's top) on `info`'s data and
    any corrections, and fits the confidence calibrator on cross-fitted held-out tracks. `cfg`: task.TrainConfig."""
    backbone, preset = load_backbone(cfg.backbone, info.cfg)
    extractor = feature_extractor(backbone)
    started = time.perf_counter()
    data = training_set(extractor, cfg, info)
    train = data.features
    validation = segment_features(extractor, cfg.data_dir, "validation", info=info) \
        if info.segments("validation") else None
    feature_s = time.perf_counter() - started
    segments = len(train.x) + (len(validation.x) if validation is not None else 0)
    _LOG.info("train: %s features of %d segments in %.1f s (%.0f segments/s)", cfg.backbone, segments, feature_s,
              segments / max(feature_s, 1e-9))

    n_classes = len(data.labels)
    weights = data.class_weights()
    started = time.perf_counter()
    heldout = heldout_predictions(data, cfg)
    head_weight = EXPERTS[cfg.experts]
    heldout["posterior"] = combine(heldout["head"], heldout["profile"], head_weight)
    calibration_s = time.perf_counter() - started
    with strategy.scope():
        head, stack = _head_model(train.x, n_classes, cfg.learning_rate)
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
    profile = tag_profile.fit(_taggram(train.x), train.label_id, n_classes)

    # The exported model: the backbone's own layers, then the same head layer objects (shared weights)
    # beside the tag profile on the backbone's taggram, averaged.
    with strategy.scope():
        head_probabilities = _apply(stack, extractor.output)
        profile_probabilities = tag_profile.TagProfile.of(profile, name="tag_profile")(backbone.output[musicnn.TAGGRAM])
        probabilities = WeightedMean(head_weight, dtype="float32", name=models.PROBABILITIES)(
            [head_probabilities, profile_probabilities])
        model = keras.Model(backbone.input, probabilities, name=f"{cfg.backbone}_head".replace("-", "_"))
        embedding = GenreSoundEmbedding(dtype="float32", name=models.EMBEDDING)(
            [probabilities, backbone.output[musicnn.EMBEDDING_OUTPUT]])
        serving = keras.Model(backbone.input, {models.PROBABILITIES: probabilities, models.EMBEDDING: embedding})
    if cfg.fine_tune:
        history = _fine_tune(model, backbone, cfg, info, strategy, verbose=verbose)
    epochs = len(history["loss"])
    throughput = {"feature_s": round(feature_s, 2), "feature_segments_per_s": segments / max(feature_s, 1e-9),
                  "head_s": round(head_s, 2), "calibration_s": round(calibration_s, 2),
                  "examples_per_s": len(train.x) * epochs / max(head_s, 1e-9)}
    card = {"backbone": {"name": cfg.backbone, "source": preset["source"], "licence": preset["licence"],
                         "head_inputs": list(HEAD_INPUTS), "fine_tuned": list(FINE_TUNED_LAYERS) if cfg.fine_tune else []},
            "head": {"units": HEAD_UNITS, "dropout": HEAD_DROPOUT, "l2": HEAD_L2,
                     "combined_with": {
                         "expert": "tag profile: per label, the mean standardized log-odds of the backbone's "
                                   f"{TAGGRAM_SIZE} tags over its training segments; cosine x scale, softmax",
                         "scale": round(profile.scale, 3),
                         "top_tags": profile.top_tags(preset["labels"], data.labels),
                         "rule": f"probabilities = {head_weight:g} x head + {1 - head_weight:g} x tag profile",
                         "experts": cfg.experts,
                         # head weight -> share of held-out tracks right: the head alone, the mean, the profile alone
                         "heldout_accuracy_by_head_weight": heldout_accuracy(heldout)},
                     "embedding": f"[probabilities, {SOUND_WEIGHT} x unit({musicnn.EMBEDDING_OUTPUT})]"}}
    reference = aggregate.typicality_reference(
        *_track_sounds_of(train), _track_sounds_of(validation)[0] if has_validation else np.zeros((0, 1)),
        n_classes=n_classes)
    return Fitted(model, history, monitor, throughput, card, int(embedding.shape[-1]), serving,
                  typicality_offset=n_classes, labels=data.labels, heldout=heldout,
                  typicality={**reference, "offset": n_classes})


def _track_sounds_of(features: SegmentFeatures) -> tuple[np.ndarray, np.ndarray]:
    """Each track's typicality embedding (the sound part of the export's track embedding) and label."""
    track_ids, inverse = np.unique(features.track_id, return_inverse=True)
    labels = np.zeros(len(track_ids), np.int64)
    labels[inverse] = features.label_id
    return _track_sounds(_penultimate(features.x), inverse, len(track_ids)), labels


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
