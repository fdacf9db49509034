"""The Arrow schema of tag rows (failed inputs: schemas/failure.py).

Every reader and writer of these files imports them from here (the tag pipeline, `cattag load`,
the tests), so a column changes in one place.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import pyarrow as pa

from schemas.descriptors import DESCRIPTOR_FIELDS
from schemas.health import HEALTH_FIELDS

FINGERPRINT = "content_fingerprint"
GENRE_SOURCE = "genre_source"
BY_MODEL, BY_REVIEW = "model", "review"
NOT_MUSIC = "not music"  # what a reviewer writes for a track that is no music; its genre is then null

# Keys of the schema metadata: what a reader needs to interpret `probabilities` and `embedding`.
META_LABELS = b"cattag.labels"  # JSON list, aligned with `probabilities`
META_MODEL_VERSION = b"cattag.model_version"
META_FEATURE_VERSION = b"cattag.feature_version"
META_EMBEDDING_DIM = b"cattag.embedding_dim"

TOP_K_ENTRY = pa.struct([pa.field("label", pa.string(), nullable=False),
                         pa.field("score", pa.float32(), nullable=False)])


def tags_schema(*, labels: Sequence[str], embedding_dim: int, model_version: str, feature_version: str) -> pa.Schema:
    """The schema of one model's tag files.

    `genre`, `top_k` and `probabilities` are null, and `embedding` all zeros, for a track with no
    audible segment (all silent): it still gets a row, flagged `low_confidence`, rather than a
    guess. (Zeros, not null: pyarrow 25 cannot read back a null in a fixed-size list column.)
    """
    fields = [
        pa.field("track_id", pa.string(), nullable=False),
        pa.field("uri", pa.string(), nullable=False),
        # BLAKE2b-128 of the file's bytes (transforms.fingerprint): --skip-existing re-tags a track id
        # whose content changed. Null in rows written before cattag recorded it.
        pa.field(FINGERPRINT, pa.string()),
        pa.field("genre", pa.string()),
        pa.field("confidence", pa.float32(), nullable=False),
        pa.field("top_k", pa.list_(TOP_K_ENTRY)),
        pa.field("probabilities", pa.list_(pa.float32())),
        # The labels the track carries, each with its score, best first: for a multi-label tagger
        # (musicnn) every tag whose score reaches that tag's threshold; for a genre classifier its
        # genre when not flagged for review. Empty when none qualifies; null for a silent track.
        pa.field("tags", pa.list_(TOP_K_ENTRY)),
        pa.field("embedding", pa.list_(pa.float32(), embedding_dim), nullable=False),
        pa.field("duration_s", pa.float64(), nullable=False),
        pa.field("n_segments", pa.int32(), nullable=False),
        pa.field("low_confidence", pa.bool_(), nullable=False),
        # Why a track was flagged, for the people reviewing it: "silent", "unlike the training
        # music", "low confidence" (calibrated models) or "low score", "close runner-up"; null when not flagged.
        pa.field("review_reason", pa.string()),
        # Cosine of the embedding to the nearest training-class centroid (null: silent track, or
        # a model exported without the reference).
        pa.field("typicality", pa.float32()),
        # Who set `genre`: "model", or "review" for a track a person labelled (`cattag review`, then
        # `cattag train --add-labels`); a reviewed track's confidence is 1 and its genre null for "not music".
        # Null in rows written before cattag recorded it (read as "model").
        pa.field(GENRE_SOURCE, pa.string()),
        # The genre a model gave the track: this model's, or for a reviewed track the one the reviewer saw.
        pa.field("model_genre", pa.string()),
        pa.field("model_version", pa.string(), nullable=False),
        pa.field("feature_version", pa.string(), nullable=False),
        pa.field("tagged_at", pa.timestamp("us", tz="UTC"), nullable=False),
        # Tempo, key and loudness of the same decode (schemas/descriptors.py; null with --descriptors off).
        *DESCRIPTOR_FIELDS,
        # Technical faults of the file and its Chromaprint fingerprint (schemas/health.py).
        *HEALTH_FIELDS,
    ]
    metadata = {
        META_LABELS: json.dumps(list(labels)).encode(),
        META_MODEL_VERSION: model_version.encode(),
        META_FEATURE_VERSION: feature_version.encode(),
        META_EMBEDDING_DIM: str(embedding_dim).encode(),
    }
    return pa.schema(fields, metadata=metadata)


def labels_of(schema: pa.Schema) -> list[str]:
    """The label vocabulary a tag file's `probabilities` are aligned with."""
    if not schema.metadata or META_LABELS not in schema.metadata:
        raise ValueError("not a cattag tag file: its schema has no label vocabulary")
    return json.loads(schema.metadata[META_LABELS])
