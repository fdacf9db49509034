"""The files an exported model carries besides the SavedModel: the contract between `cattag train`
(which writes them) and `cattag evaluate` / `cattag tag` (which read them).

MDIR/assets/labels.txt            the label vocabulary, one per line, in output order
MDIR/assets/feature_config.json   the FeatureConfig the model expects, with its version
MDIR/assets/typicality.json       how close a track's embedding comes to the training music's
                                  (class centroids and the flagging threshold; see transforms/aggregate.py)
MDIR/assets/calibration.json      how `confidence` is computed from the top posterior and typicality, and
                                  the review threshold (transforms/calibration.py); models trained before lack it
MDIR/assets/reviews.json          reviewers' labels the model was trained with, by track id (pipelines/train.py);
                                  `cattag tag` gives those tracks the reviewed label
MDIR/model.json                   the model card (schemas/model_card.py): data, training, metrics, model_version

Read through Beam's filesystems, so a model on gs:// works, and without TensorFlow, so a launcher
can check a model before any worker loads it.
"""

from __future__ import annotations

import dataclasses
import json

from apache_beam.io.filesystems import FileSystems

from schemas.features import FeatureConfig, FeatureConfigMismatch
from schemas.model_card import ModelCard, ModelCardError

LABELS_ASSET = "assets/labels.txt"
CONFIG_ASSET = "assets/feature_config.json"
TYPICALITY_ASSET = "assets/typicality.json"
CALIBRATION_ASSET = "assets/calibration.json"
REVIEWS_ASSET = "assets/reviews.json"
MODEL_CARD = "model.json"


@dataclasses.dataclass(frozen=True)
class ModelAssets:
    cfg: FeatureConfig
    labels: list[str]
    card: ModelCard
    typicality: dict | None = None  # {"centroids": [[...]], "threshold": float, ...}; older models lack it
    calibration: dict | None = None  # transforms.calibration.Calibration.to_dict() and more; older models lack it
    reviews: dict | None = None  # track_id -> {"label": str | None (not music), "model_genre": str | None}

    @property
    def model_version(self) -> str:
        return self.card.model_version


def read_model_assets(model_dir: str) -> ModelAssets:
    """Labels, feature config and card of an exported model.

    Raises:
        ValueError: `model_dir` is not a cattag model.
        FeatureConfigMismatch: its feature config is one this code cannot reproduce (unknown
            fields, or parameters that do not hash to the recorded version).
    """
    root = model_dir.rstrip("/")
    paths = {name: FileSystems.join(root, name) for name in (LABELS_ASSET, CONFIG_ASSET, MODEL_CARD)}
    missing = [name for name, path in paths.items() if not FileSystems.exists(path)]
    if missing:
        raise ValueError(f"{model_dir} is not a cattag model (missing {', '.join(missing)})")
    labels = [line for line in _read(paths[LABELS_ASSET]).splitlines() if line.strip()]
    try:
        cfg = FeatureConfig.from_dict(json.loads(_read(paths[CONFIG_ASSET])))
    except (TypeError, ValueError) as err:
        raise FeatureConfigMismatch(f"{model_dir}: {err}") from err
    try:
        card = ModelCard.from_json(_read(paths[MODEL_CARD]))
    except ModelCardError as err:
        raise ValueError(f"{model_dir}: {err}") from err
    if card.feature_version != cfg.version:
        raise FeatureConfigMismatch(
            f"{model_dir}: its card says feature config {card.feature_version} but its "
            f"{CONFIG_ASSET} is {cfg.version}; the model directory was assembled from two exports")
    typicality, calibration, reviews = (_optional_json(root, name)
                                        for name in (TYPICALITY_ASSET, CALIBRATION_ASSET, REVIEWS_ASSET))
    return ModelAssets(cfg, labels, card, typicality, calibration, reviews)


def _optional_json(root: str, name: str) -> dict | None:
    path = FileSystems.join(root, name)
    return json.loads(_read(path)) if FileSystems.exists(path) else None


def _read(path: str) -> str:
    with FileSystems.open(path) as handle:
        return handle.read().decode("utf-8")
