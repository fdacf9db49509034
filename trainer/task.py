"""cattag train: featurize output -> trained, evaluated and exported genre model.

run(TrainConfig) = choose device and strategy -> fit -> export -> typicality -> evaluate the
export on the test split. Fit is one of two ways:
  --backbone musicnn-msd (default): a small head on the pretrained backbone's features
      (trainer/transfer.py), exported with the backbone as one model;
  --backbone none --arch ARCH: a CNN from scratch on tf.data input with augmentation (below).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import logging
import math
import pathlib
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from schemas import examples, presets
from schemas.features import FeatureConfigMismatch
from schemas.model_assets import MODEL_CARD
from schemas.model_card import ModelCard, ModelCardError
from trainer import evaluate, export, models, transfer
from trainer.data import Augment, DataInfo, labelled_segments, make_dataset, read_data_info
from transforms import aggregate, calibration

_LOG = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    data_dir: str
    model_dir: str
    backbone: str = presets.DEFAULT_BACKBONE  # or "none": train `arch` from scratch
    arch: str = models.DEFAULT_ARCH
    fine_tune: bool = False  # with a backbone: also train its top dense layer, end to end
    experts: str = "both"  # with a backbone: which posteriors the model averages (transfer.EXPERTS)
    fine_tune_epochs: int = 5
    epochs: int = 40
    batch_size: int = 32  # per replica
    seed: int = 0
    learning_rate: float = 1e-3
    patience: int = 10
    device: str = "auto"  # auto | cpu | gpu
    mixed_precision: str = "auto"  # auto (on with a GPU) | on | off
    augment: bool = True
    verbose: str | int = "auto"
    # Featurize outputs of reviewed tracks whose train split joins the training data (pipelines/train.py
    # writes them from `--add-labels review.csv`); their labels are matched by name, new ones added.
    extra_data: tuple[str, ...] = ()
    corrections: dict | None = None  # what the model card says of them


@dataclasses.dataclass(frozen=True)
class Device:
    strategy: tf.distribute.Strategy
    description: str
    replicas: int
    mixed_precision: bool


def choose_device(device: str, mixed_precision: str) -> Device:
    """GPUs with MirroredStrategy (and mixed precision) when present, else the CPU."""
    if device not in ("auto", "cpu", "gpu"):
        raise ValueError(f"--device {device!r}: expected auto, cpu or gpu")
    gpus = tf.config.list_physical_devices("GPU")
    if device == "gpu" and not gpus:
        raise ValueError("--device gpu: TensorFlow sees no GPU on this machine")
    if device == "cpu" or not gpus:
        if gpus:
            tf.config.set_visible_devices([], "GPU")
        use_mixed = mixed_precision == "on"
        strategy, description = tf.distribute.get_strategy(), "CPU"
    else:
        use_mixed = mixed_precision in ("auto", "on")
        strategy = tf.distribute.MirroredStrategy()
        description = f"{len(gpus)} GPU(s): " + ", ".join(g.name for g in gpus)
    # The policy must be set before the model is built; float32 otherwise (and reset between runs).
    keras.mixed_precision.set_global_policy("mixed_float16" if use_mixed else "float32")
    return Device(strategy, description, strategy.num_replicas_in_sync, use_mixed)


class _Throughput(keras.callbacks.Callback):
    """Training steps and examples per second, over all epochs but the first (tracing, warm-up)."""

    def __init__(self, examples_per_epoch: int, steps_per_epoch: int):
        super().__init__()
        self._examples, self._steps = examples_per_epoch, steps_per_epoch
        self.epoch_seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_seconds.append(time.perf_counter() - self._started)

    def summary(self) -> dict[str, float]:
        timed = self.epoch_seconds[1:] or self.epoch_seconds
        seconds = sum(timed) / max(len(timed), 1)
        return {"steps_per_s": self._steps / seconds, "examples_per_s": self._examples / seconds,
                "epoch_s": seconds}


def _refuse_other_model(model_dir: pathlib.Path, info: DataInfo) -> None:
    card_path = model_dir / MODEL_CARD
    if card_path.exists():
        try:
            held = ModelCard.from_json(card_path.read_text()).feature_version
        except ModelCardError as err:
            raise ValueError(f"{model_dir} holds something that is not a cattag model ({err}); choose another "
                             "--model-dir") from err
        if held != info.cfg.version:
            raise FeatureConfigMismatch(
                f"{model_dir} holds a model for feature config {held}, but the data was "
                f"featurized with {info.cfg.version}; choose another --model-dir")


def run(cfg: TrainConfig) -> ModelCard:
    """Trains, exports and evaluates; returns the model card."""
    keras.utils.set_random_seed(cfg.seed)
    info = read_data_info(cfg.data_dir)
    if len(info.labels) < 2:
        raise ValueError(f"{cfg.data_dir} has {len(info.labels)} label(s); a genre model needs at least 2")
    if info.segments("train") == 0:
        raise ValueError(f"{cfg.data_dir} has no training segments")
    model_dir = pathlib.Path(cfg.model_dir)
    _refuse_other_model(model_dir, info)
    model_dir.mkdir(parents=True, exist_ok=True)

    device = choose_device(cfg.device, cfg.mixed_precision)
    global_batch = cfg.batch_size * device.replicas
    arch = f"{cfg.backbone}-head" if cfg.backbone != "none" else cfg.arch
    _LOG.info("train: %s on %s (global batch %d, mixed precision %s), %d training segments, %d labels",
              arch, device.description, global_batch, device.mixed_precision, info.segments("train"),
              len(info.labels))

    verbose = cfg.verbose if cfg.verbose != "auto" else ("auto" if sys.stdout.isatty() else 2)
    monitor = "val_loss" if info.segments("validation") else "loss"
    callbacks = [keras.callbacks.EarlyStopping(monitor=monitor, patience=cfg.patience, restore_best_weights=True),
                 keras.callbacks.CSVLogger(str(model_dir / "history.csv"))]
    if cfg.extra_data and cfg.backbone == "none":
        raise ValueError("--add-labels trains a head on a pretrained backbone; with --backbone none there is no "
                         "head to add reviewed tracks to (choose a --backbone)")
    started = time.perf_counter()
    if cfg.backbone != "none":
        fitted = transfer.fit(cfg, info, device.strategy, callbacks=callbacks, verbose=verbose)
    else:
        fitted = _fit_from_scratch(cfg, info, device, model_dir, callbacks=callbacks, verbose=verbose)
    train_s = time.perf_counter() - started
    model = fitted.model
    labels = fitted.labels or info.labels
    epochs_run = len(fitted.history["loss"])
    best_epoch = int(np.argmin(fitted.history[monitor])) + 1

    card = ModelCard(
        name=f"cattag genre model ({arch})",
        arch=arch,
        created_at=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        feature_version=info.cfg.version,
        feature_config=info.cfg.to_dict(),
        labels=labels,
        embedding_dim=fitted.embedding_dim,
        data={
            "dir": str(pathlib.Path(cfg.data_dir).resolve()),
            "splits": info.metadata.splits,
            "split_key": info.metadata.split_key,
            "segments": {split: info.segments(split) for split in examples.SPLITS},
        },
        training={
            **{k: v for k, v in dataclasses.asdict(cfg).items()
           if k not in ("data_dir", "model_dir", "verbose", "extra_data", "corrections")},
            "epochs_run": epochs_run,
            "best_epoch": best_epoch,
            "monitor": monitor,
            "global_batch_size": global_batch,
            "device": device.description,
            "replicas": device.replicas,
            "mixed_precision": device.mixed_precision,
            "augment": dataclasses.asdict(Augment()) if cfg.augment and cfg.backbone == "none" else None,
            "class_weights": dict(zip(info.labels, info.class_weights().round(4).tolist(), strict=True))
            if labels == info.labels else None,
            "parameters": model.count_params(),
            "train_s": round(train_s, 1),
            **{k: round(v, 3) for k, v in fitted.throughput.items()},
        },
        **fitted.card,
        calibration=_calibration(fitted.heldout) if fitted.heldout is not None else None,
        corrections=cfg.corrections,
        signatures=export.SIGNATURES,
    )
    version = export.export(model, model_dir=str(model_dir), cfg=info.cfg, labels=labels, card=card,
                            serving=fitted.serving)
    _LOG.info("train: exported %s to %s after %d epochs (best %d)", version, model_dir, epochs_run, best_epoch)
    if card.calibration is not None:
        export.write_calibration(str(model_dir), card.calibration)
        _LOG.info("train: confidence calibrated on %d held-out tracks: ECE %.3f -> %.3f; flag below %.2f",
                  card.calibration["heldout"]["tracks"], card.calibration["heldout"]["ece_before"],
                  card.calibration["heldout"]["ece"], card.calibration["flag_below"])

    exported = tf.saved_model.load(str(model_dir))  # loaded once for the typicality reference and evaluation
    typicality = fitted.typicality or _typicality_reference(exported, cfg.data_dir, info,
                                                            offset=fitted.typicality_offset)
    export.write_typicality(str(model_dir), typicality)
    _LOG.info("train: typicality threshold %.3f (%gth percentile of %d held-out and %d left-out training tracks)",
              typicality["threshold"], typicality["percentile"], typicality["heldout_tracks"],
              typicality["leave_one_out_tracks"])

    split = "test" if info.segments("test") else "validation" if info.segments("validation") else "train"
    metrics = evaluate.evaluate_model(str(model_dir), cfg.data_dir, split=split, model=exported)
    card = dataclasses.replace(card, model_version=version, metrics={
        **{k: metrics[k] for k in ("segment_accuracy", "track_accuracy", "macro_f1", "tracks", "segments", "split")},
        **({"ece": metrics["calibration"]["ece"], "wrong_flagged": metrics["calibration"]["wrong_flagged"],
            "flagged_share": metrics["calibration"]["flagged_share"]} if "calibration" in metrics else {})})
    (model_dir / MODEL_CARD).write_text(card.to_json())
    keras.mixed_precision.set_global_policy("float32")
    return card


def _calibration(heldout: dict[str, np.ndarray]) -> dict:
    """The calibrator and review threshold fitted on cross-fitted held-out tracks, with their
    reliability before (the top posterior as confidence) and after, for the card and the asset."""
    top = heldout["posterior"].max(axis=1)
    right = heldout["posterior"].argmax(axis=1) == heldout["label_id"]
    fitted = calibration.fit(top, heldout["typicality"], right)
    confidence = fitted.confidence(top, heldout["typicality"])
    schemes = {}
    for scheme in sorted(set(heldout["scheme"].tolist())):
        members = heldout["scheme"] == scheme
        schemes[scheme] = {**calibration.summary(confidence[members], right[members], fitted.flag_below),
                           "ece_before": calibration.expected_calibration_error(top[members], right[members]),
                           "mean_typicality": float(heldout["typicality"][members].mean())}
    return {**fitted.to_dict(),
            "heldout": {**calibration.summary(confidence, right, fitted.flag_below),
                        "ece_before": calibration.expected_calibration_error(top, right),
                        "how": f"{transfer.CALIBRATION_FOLDS}-fold cross-fitting over the training tracks, stratified "
                               f"by label and by sound clusters (trainer/transfer.py heldout_predictions)",
                        "schemes": schemes},
            "flag_rule": f"flag below the confidence of {calibration.FLAG_RECALL:.0%} of held-out wrong tags, "
                         f"at most {calibration.FLAG_MAX_SHARE:.0%} of held-out tracks"}


def _fit_from_scratch(cfg: TrainConfig, info: DataInfo, device: Device, model_dir: pathlib.Path, *,
                      callbacks: list, verbose) -> transfer.Fitted:
    """A CNN (cfg.arch) from scratch on augmented log-mels."""
    global_batch = cfg.batch_size * device.replicas
    steps_per_epoch = math.ceil(info.segments("train") / global_batch)
    train = make_dataset(cfg.data_dir, "train", info=info, batch_size=global_batch, training=True, seed=cfg.seed,
                         augment=Augment() if cfg.augment else None)
    has_validation = info.segments("validation") > 0
    validation = labelled_segments(cfg.data_dir, "validation", info=info, batch_size=global_batch) if has_validation else None
    monitor = "val_loss" if has_validation else "loss"

    with device.strategy.scope():
        model = models.build(cfg.arch, mel_shape=info.cfg.mel_shape, n_classes=len(info.labels),
                             mel_mean=info.mel_mean, mel_std=info.mel_std)
        schedule = keras.optimizers.schedules.CosineDecay(
            cfg.learning_rate * 0.1, decay_steps=steps_per_epoch * cfg.epochs,
            warmup_target=cfg.learning_rate, warmup_steps=steps_per_epoch * min(3, cfg.epochs))
        model.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=1e-4),
                      loss=keras.losses.CategoricalCrossentropy(), metrics=["accuracy"])

    throughput = _Throughput(info.segments("train"), steps_per_epoch)
    callbacks = [
        *callbacks,
        keras.callbacks.ModelCheckpoint(str(model_dir / "checkpoints" / "best.keras"), monitor=monitor,
                                        save_best_only=True),
        keras.callbacks.TensorBoard(str(model_dir / "logs")),
        throughput,
    ]
    history = model.fit(train, validation_data=validation, epochs=cfg.epochs, callbacks=callbacks,
                        verbose=verbose, shuffle=False)  # tf.data shuffles
    return transfer.Fitted(model, dict(history.history), monitor, throughput.summary(), {},
                           int(model.get_layer(models.EMBEDDING).output.shape[-1]))


def _typicality_reference(model, data_dir: str, info: DataInfo, *, offset: int = 0) -> dict:
    """Class centroids of the training tracks' embeddings, and the threshold below which a track
    is unlike them (transforms.aggregate.typicality_reference: validation tracks, and training
    tracks left out of their own centroid). `model`: the export, loaded."""

    def tracks(split: str) -> dict[str, np.ndarray]:
        predictions = evaluate.predict(model, data_dir, split, info=info)
        return evaluate.track_level(predictions["track_id"], predictions["label_id"], predictions["probabilities"],
                                    predictions["embedding"])

    train = tracks("train")
    heldout = tracks("validation")["embedding"] if info.segments("validation") else train["embedding"][:0]
    return aggregate.typicality_reference(train["embedding"], train["label_id"], heldout, n_classes=len(info.labels),
                                          offset=offset)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = TrainConfig(data_dir="", model_dir="")
    parser.add_argument("--data", required=True, help="a `cattag featurize` output directory")
    parser.add_argument("--model-dir", required=True, help="where the SavedModel, card, logs and plots go")
    parser.add_argument("--backbone", default=defaults.backbone, choices=[*presets.PRESETS, "none"],
                        help="a pretrained backbone (`cattag pretrained fetch` first) under a small genre head, "
                             "or none to train --arch from scratch (default %(default)s)")
    parser.add_argument("--arch", default=defaults.arch, choices=sorted(models.ARCHITECTURES),
                        help="with --backbone none: the architecture trained from scratch (default %(default)s)")
    parser.add_argument("--experts", choices=sorted(transfer.EXPERTS), default=defaults.experts,
                        help="with a backbone: the genre posterior is the mean of the trained head's and the tag "
                             "profile's (your labels mapped onto the backbone's own tags; both), or one of them "
                             "alone (head, tag-profile) (default %(default)s)")
    parser.add_argument("--fine-tune", action="store_true",
                        help="with a backbone: after the head, train the backbone's top dense layer too, end to end "
                             "on the log-mels (slower; for a few thousand tracks or more)")
    parser.add_argument("--fine-tune-epochs", type=int, default=defaults.fine_tune_epochs,
                        help="epochs of --fine-tune, at most (default %(default)s)")
    parser.add_argument("--epochs", type=int, default=defaults.epochs, help="at most this many (default %(default)s)")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size,
                        help="per replica; scaled by the number of GPUs (default %(default)s)")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="(default %(default)s)")
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate, help="peak (default %(default)s)")
    parser.add_argument("--patience", type=int, default=defaults.patience,
                        help="early stopping patience in epochs (default %(default)s)")
    parser.add_argument("--device", choices=("auto", "cpu", "gpu"), default=defaults.device,
                        help="auto: GPUs when present (default %(default)s)")
    parser.add_argument("--mixed-precision", choices=("auto", "on", "off"), default=defaults.mixed_precision,
                        help="auto: on with GPUs (default %(default)s)")
    parser.add_argument("--no-augment", action="store_true", help="turn SpecAugment, gain and mixup off")



def config_from_args(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(
        data_dir=args.data, model_dir=args.model_dir, backbone=args.backbone, arch=args.arch, fine_tune=args.fine_tune,
        experts=args.experts,
        fine_tune_epochs=args.fine_tune_epochs, epochs=args.epochs, batch_size=args.batch_size,
        seed=args.seed, learning_rate=args.learning_rate, patience=args.patience, device=args.device,
        mixed_precision=args.mixed_precision, augment=not args.no_augment)


def main(argv: list[str] | None = None) -> ModelCard:
    """`cattag train` without the review loop (pipelines/train.py adds --add-labels): parses flags only."""
    parser = argparse.ArgumentParser(prog="cattag train")
    add_arguments(parser)
    return run(config_from_args(parser.parse_args(argv)))

