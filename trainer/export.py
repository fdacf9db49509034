"""Export: a SavedModel that the tagger can use with no other file.

MDIR/ is the SavedModel (saved_model.pb, variables/) written by keras.export.ExportArchive, plus
the assets and model card described in schemas/model_assets.py.
Endpoints:
  serve(mel: float32 [batch, frames, n_mels])          -> {probabilities, embedding}
  serve_examples(examples: string [batch])              -> {probabilities, embedding, track_id, segment_index}
    (serialized tf.Examples in the featurize schema)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib

import keras
import tensorflow as tf

from schemas import examples
from schemas.features import FeatureConfig
from schemas.model_assets import (
    CALIBRATION_ASSET,
    CONFIG_ASSET,
    LABELS_ASSET,
    MODEL_CARD,
    TYPICALITY_ASSET,
)
from schemas.model_card import MULTILABEL, ModelCard
from trainer import models, musicnn
from trainer.data import parse_batch
from transforms import aggregate


def weights_version(model: keras.Model) -> str:
    """A content hash of the weights: two exports of the same weights share a version."""
    digest = hashlib.sha256()
    for weight in model.get_weights():
        digest.update(weight.tobytes())
    return digest.hexdigest()[:12]


def export(model: keras.Model, *, model_dir: str, cfg: FeatureConfig, labels: list[str], card: ModelCard,
           serving: keras.Model | None = None) -> str:
    """Writes the SavedModel, its assets and the model card; returns the model version. `serving`:
    the model returning {probabilities, embedding} (default: models.with_embedding(model))."""
    version = f"{card.arch}-{weights_version(model)}"
    _write(serving or models.with_embedding(model), model_dir=model_dir, cfg=cfg, labels=labels,
           card=dataclasses.replace(card, model_version=version))
    return version


def export_tagger(backbone: keras.Model, *, model_dir: str, preset: dict,
                  threshold: float = aggregate.DEFAULT_TAG_THRESHOLD) -> str:
    """A pretrained musicnn as a cattag model: tag scores as `probabilities` (multi-label, sigmoid),
    the backbone's embedding output as `embedding`. `preset` is the preset.json it was converted with."""
    cfg = FeatureConfig.from_dict(preset["feature_config"])
    outputs = backbone.output
    serving = keras.Model(backbone.input, {models.PROBABILITIES: outputs[musicnn.TAGGRAM],
                                           models.EMBEDDING: outputs[musicnn.EMBEDDING_OUTPUT]})
    version = f"{preset['name']}-{weights_version(backbone)}"
    card = ModelCard(
        name=f"{preset['name']} ({preset['description']})",
        arch="musicnn",
        task=MULTILABEL,
        preset=preset["name"],
        labels=preset["labels"],
        genre_labels=preset["genre_labels"],
        # One threshold per tag, all equal until there is labelled music to set them from: see docs/pretrained.md.
        tag_thresholds=dict.fromkeys(preset["labels"], threshold),
        tag_threshold_rule=TAG_THRESHOLD_RULE.format(threshold=threshold),
        embedding_layer=musicnn.EMBEDDING_OUTPUT,
        embedding_dim=int(outputs[musicnn.EMBEDDING_OUTPUT].shape[-1]),
        feature_version=cfg.version,
        feature_config=cfg.to_dict(),
        source=preset["source"],
        licence=preset["licence"],
        model_version=version,
        signatures=SIGNATURES,
    )
    _write(serving, model_dir=model_dir, cfg=cfg, labels=preset["labels"], card=card)
    return version


TAG_THRESHOLD_RULE = (
    "{threshold} for every tag, chosen for recall of a track's main tags, not calibrated: no labelled music ships "
    "with the weights to set one per tag from. A track carries a tag when the tag's mean sigmoid score over its "
    "segments reaches it; the scores are musicnn's, trained on last.fm / MagnaTagATune tags, so a score of "
    "{threshold} is no 20% chance. Measured: a GTZAN clip's genre tag reached it for 33 of 42 clips whose genre "
    "the tagger has a tag for (bench/RESULTS.md, Zero-shot tags). Set your own in tag_thresholds, or "
    "`cattag tag --tag-threshold` for all.")

SIGNATURES = {"serve": "mel float32 [batch, frames, n_mels] -> probabilities, embedding",
              "serve_examples": "serialized tf.Example [batch] -> probabilities, embedding, track_id, segment_index"}


def _write(serving: keras.Model, *, model_dir: str, cfg: FeatureConfig, labels: list[str], card: ModelCard) -> None:
    """The SavedModel of a model returning {probabilities, embedding}, its assets and card."""
    archive = keras.export.ExportArchive()
    archive.track(serving)

    def serve(mel):
        return serving(mel, training=False)

    def serve_examples(serialized):
        parsed = parse_batch(serialized, cfg)
        outputs = serving(parsed[examples.MEL], training=False)
        return {**outputs, "track_id": parsed[examples.TRACK_ID], "segment_index": parsed[examples.SEGMENT_INDEX]}

    archive.add_endpoint("serve", serve, input_signature=[tf.TensorSpec([None, *cfg.mel_shape], tf.float32, name="mel")])
    archive.add_endpoint("serve_examples", serve_examples, input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    archive.write_out(model_dir, verbose=False)

    root = pathlib.Path(model_dir)
    (root / "assets").mkdir(exist_ok=True)
    (root / LABELS_ASSET).write_text("".join(f"{label}\n" for label in labels))
    (root / CONFIG_ASSET).write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    (root / MODEL_CARD).write_text(card.to_json())


def write_typicality(model_dir: str, reference: dict) -> None:
    """Adds the typicality reference (transforms.aggregate.typicality_reference) to the assets."""
    (pathlib.Path(model_dir) / TYPICALITY_ASSET).write_text(json.dumps(reference) + "\n")


def write_calibration(model_dir: str, calibration: dict) -> None:
    """Adds the confidence calibrator (transforms.calibration.Calibration, with its held-out reliability)."""
    (pathlib.Path(model_dir) / CALIBRATION_ASSET).write_text(json.dumps(calibration) + "\n")
