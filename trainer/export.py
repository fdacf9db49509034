"""Export: a SavedModel that the tagger can use with no other file.

MDIR/ is the SavedModel (saved_model.pb, variables/) written by keras.export.ExportArchive, plus
the assets and model card described in schemas/model_assets.py.
Endpoints:
  serve(mel: float32 [batch, frames, n_mels])          -> {probabilities, embedding}
  serve_examples(examples: string [batch])              -> {probabilities, embedding, track_id, segment_index}
    (serialized tf.Examples in the featurize schema)
"""

from __future__ import annotations

import hashlib
import json
import pathlib

import keras
import tensorflow as tf

from schemas import examples
from schemas.features import FeatureConfig
from schemas.model_assets import (
    CONFIG_ASSET,
    LABELS_ASSET,
    MODEL_CARD,
    TYPICALITY_ASSET,
)
from trainer import models
from trainer.data import parse_batch


def weights_version(model: keras.Model) -> str:
    """A content hash of the weights: two exports of the same weights share a version."""
    digest = hashlib.sha256()
    for weight in model.get_weights():
        digest.update(weight.tobytes())
    return digest.hexdigest()[:12]


def export(model: keras.Model, *, model_dir: str, cfg: FeatureConfig, labels: list[str], card: dict) -> str:
    """Writes the SavedModel, its assets and the model card; returns the model version."""
    serving = models.with_embedding(model)
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
    version = f"{card.get('arch', 'model')}-{weights_version(model)}"
    (root / MODEL_CARD).write_text(json.dumps({**card, "model_version": version}, indent=2) + "\n")
    return version


def write_typicality(model_dir: str, reference: dict) -> None:
    """Adds the typicality reference (transforms.aggregate.typicality_reference) to the assets."""
    (pathlib.Path(model_dir) / TYPICALITY_ASSET).write_text(json.dumps(reference) + "\n")
