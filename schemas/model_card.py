"""The model card: MDIR/model.json, what an exported model says about itself.

`cattag train` and `cattag pretrained fetch` write it (trainer/task.py, trainer/export.py); `cattag tag`,
`cattag evaluate` and `cattag report` read it (through schemas/model_assets.py). One typed record, checked
when it is read, so that a reader can trust its fields' types instead of guessing with `.get()`.

Versions: `card_version` 2 is this layout. Cards written before it had no `card_version` (read as 1): the
same fields, so they load unchanged. Keys this code does not know are kept in `extra` and written back.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

CARD_VERSION = 2
GENRE = "genre"  # one genre per track (softmax)
MULTILABEL = "multilabel"  # independent tags (sigmoid), as the pretrained taggers
TASKS = (GENRE, MULTILABEL)


class ModelCardError(ValueError):
    """A model card that is not one: missing or mistyped fields."""


@dataclasses.dataclass(frozen=True)
class ModelCard:
    name: str
    arch: str
    labels: list[str]
    embedding_dim: int | None  # None only in cards exported before cattag recorded it
    feature_version: str
    feature_config: dict[str, Any]
    model_version: str = "unknown"  # set at export: the arch and a hash of the weights
    task: str = GENRE
    signatures: dict[str, str] = dataclasses.field(default_factory=dict)
    created_at: str | None = None
    # A trained model: the data it saw, how it trained, how it scored on held-out tracks.
    data: dict[str, Any] | None = None
    training: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    # A head on a pretrained backbone: which backbone, and the head's shape.
    backbone: dict[str, Any] | None = None
    head: dict[str, Any] | None = None
    # A calibrated genre model: how `confidence` is computed and the review threshold
    # (transforms/calibration.py), with the reliability of held-out tracks before and after.
    calibration: dict[str, Any] | None = None
    # A model trained with reviewers' corrections (`cattag train --add-labels`): how many, from where.
    corrections: dict[str, Any] | None = None
    # A pretrained tagger (task multilabel): its preset, the tags that are genres, a threshold per tag,
    # the layer its embedding comes from, and where its weights came from under which licence.
    preset: str | None = None
    genre_labels: list[str] | None = None
    tag_thresholds: dict[str, float] | None = None
    tag_threshold_rule: str | None = None  # what the thresholds were chosen for (cards written before: absent)
    embedding_layer: str | None = None
    source: dict[str, Any] | None = None
    licence: str | None = None
    card_version: int = CARD_VERSION
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        _check(self)

    @property
    def multilabel(self) -> bool:
        return self.task == MULTILABEL

    def require_embedding_dim(self) -> int:
        if self.embedding_dim is None:
            raise ModelCardError("the model card has no embedding_dim; export the model again with this cattag")
        return self.embedding_dim

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; fields that are None are left out, `extra` keys written back beside the rest."""
        data = {field.name: getattr(self, field.name) for field in dataclasses.fields(self) if field.name != "extra"}
        return {**self.extra, **{key: value for key, value in data.items() if value is not None}}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCard:
        """Raises ModelCardError for a card that lacks a required field or has one of the wrong type."""
        if not isinstance(data, dict):
            raise ModelCardError(f"a model card is a JSON object, not {type(data).__name__}")
        known = {field.name for field in dataclasses.fields(cls)} - {"extra"}
        values = {key: value for key, value in data.items() if key in known}
        values.setdefault("card_version", 1)
        values.setdefault("embedding_dim", None)
        missing = [field.name for field in dataclasses.fields(cls)
                   if field.name in _REQUIRED and field.name not in values]
        if missing:
            raise ModelCardError(f"the model card lacks {', '.join(missing)}")
        try:
            return cls(**values, extra={key: value for key, value in data.items() if key not in known})
        except TypeError as err:
            raise ModelCardError(f"the model card does not fit this cattag: {err}") from err

    @classmethod
    def from_json(cls, text: str) -> ModelCard:
        try:
            data = json.loads(text)
        except ValueError as err:
            raise ModelCardError(f"the model card is not JSON: {err}") from err
        return cls.from_dict(data)


_REQUIRED = ("name", "arch", "labels", "feature_version", "feature_config")


def _check(card: ModelCard) -> None:
    """Types of the fields readers rely on; one error naming every field that is off."""
    problems = []
    if not isinstance(card.labels, list) or not card.labels or not all(isinstance(x, str) for x in card.labels):
        problems.append("labels (a non-empty list of strings)")
    if card.embedding_dim is not None and (not isinstance(card.embedding_dim, int) or card.embedding_dim < 1):
        problems.append("embedding_dim (a positive integer)")
    for name in ("name", "arch", "feature_version", "model_version"):
        if not isinstance(getattr(card, name), str):
            problems.append(f"{name} (a string)")
    if card.task not in TASKS:
        problems.append(f"task (one of {', '.join(TASKS)})")
    if not isinstance(card.feature_config, dict):
        problems.append("feature_config (an object)")
    if card.genre_labels is not None and not isinstance(card.genre_labels, list):
        problems.append("genre_labels (a list)")
    if card.calibration is not None and not isinstance(card.calibration, dict):
        problems.append("calibration (an object)")
    if card.tag_thresholds is not None and not (
            isinstance(card.tag_thresholds, dict)
            and all(isinstance(v, int | float) and 0.0 <= v <= 1.0 for v in card.tag_thresholds.values())):
        problems.append("tag_thresholds (tag -> a score between 0 and 1)")
    if not isinstance(card.card_version, int) or card.card_version > CARD_VERSION:
        problems.append(f"card_version (at most {CARD_VERSION}: a newer cattag wrote this card)")
    if problems:
        raise ModelCardError(f"the model card has a bad {', '.join(problems)}")
