"""The tf.Example layout of one log-mel segment: names, encoding, TFMD schema, parse spec.

The mel matrix is stored as little-endian float16 bytes with its shape beside it. float16 keeps
0.03 dB precision at 40 dB, far below any difference that matters for tagging, and halves the
bytes that featurize compresses and the trainer reads compared with a float32 list.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2

from schemas.features import FeatureConfig
from schemas.tf_example import example_class

TRACK_ID = "track_id"
SEGMENT_INDEX = "segment_index"
LABEL_ID = "label_id"
LABEL = "label"
MEL = "mel"
MEL_SHAPE = "mel_shape"

SPLITS = ("train", "validation", "test")
UNLABELLED_ID = -1
MEL_DTYPE = np.dtype("<f2")

TFRECORD_SUFFIX = ".tfrecord.gz"
SCHEMA_FILE = "schema.pbtxt"


def encode_example(
    *, track_id: str, segment_index: int, label_id: int, label: str, mel: np.ndarray
) -> bytes:
    """Serializes one segment. `mel` is [frames, n_mels] in dB."""
    example = example_class()()
    feature = example.features.feature
    feature[TRACK_ID].bytes_list.value.append(track_id.encode())
    feature[SEGMENT_INDEX].int64_list.value.append(segment_index)
    feature[LABEL_ID].int64_list.value.append(label_id)
    feature[LABEL].bytes_list.value.append(label.encode())
    feature[MEL].bytes_list.value.append(mel.astype(MEL_DTYPE).tobytes())
    feature[MEL_SHAPE].int64_list.value.extend(mel.shape)
    # deterministic: a proto map (the features) otherwise serializes in an order that differs between
    # processes, so the same segment featurized on two runners would give different bytes.
    return example.SerializeToString(deterministic=True)


def decode_example(serialized: bytes) -> dict[str, Any]:
    """Parses one serialized example into Python values (for tools and tests; tf.data uses
    `feature_spec` and `decode_mel`)."""
    feature = example_class().FromString(serialized).features.feature
    shape = tuple(feature[MEL_SHAPE].int64_list.value)
    mel = np.frombuffer(feature[MEL].bytes_list.value[0], dtype=MEL_DTYPE)
    return {
        TRACK_ID: feature[TRACK_ID].bytes_list.value[0].decode(),
        SEGMENT_INDEX: feature[SEGMENT_INDEX].int64_list.value[0],
        LABEL_ID: feature[LABEL_ID].int64_list.value[0],
        LABEL: feature[LABEL].bytes_list.value[0].decode(),
        MEL: mel.astype(np.float32).reshape(shape),
    }


def feature_spec(cfg: FeatureConfig) -> dict[str, Any]:
    """`tf.io.parse_example` spec of the layout above."""
    import tensorflow as tf  # here, not at the top: featurize workers never load TensorFlow

    del cfg  # the shape travels in MEL_SHAPE; the config checks it in decode_mel
    return {
        TRACK_ID: tf.io.FixedLenFeature([], tf.string),
        SEGMENT_INDEX: tf.io.FixedLenFeature([], tf.int64),
        LABEL_ID: tf.io.FixedLenFeature([], tf.int64),
        LABEL: tf.io.FixedLenFeature([], tf.string),
        MEL: tf.io.FixedLenFeature([], tf.string),
        MEL_SHAPE: tf.io.FixedLenFeature([2], tf.int64),
    }


def decode_mel(mel_bytes: Any, cfg: FeatureConfig) -> Any:
    """TF op: float16 bytes (batched or not) -> float32 [..., frames, n_mels]."""
    import tensorflow as tf

    flat = tf.io.decode_raw(mel_bytes, tf.float16, little_endian=True)
    shape = tf.concat([tf.shape(flat)[:-1], list(cfg.mel_shape)], axis=0)
    return tf.cast(tf.reshape(flat, shape), tf.float32)


def tfmd_schema(cfg: FeatureConfig, labels: Sequence[str]) -> schema_pb2.Schema:
    """A tensorflow_metadata Schema describing the examples featurize writes."""
    schema = schema_pb2.Schema()

    def add(name: str, ftype: int, dims: Sequence[int], description: str) -> schema_pb2.Feature:
        feature = schema.feature.add(name=name, type=ftype)
        feature.presence.min_fraction = 1.0
        feature.presence.min_count = 1
        for dim in dims:
            feature.shape.dim.add(size=dim)
        feature.annotation.comment.append(description)
        return feature

    add(TRACK_ID, schema_pb2.BYTES, [1], "stable track id (manifest track_id or relative path)")
    add(SEGMENT_INDEX, schema_pb2.INT, [1], "segment start = segment_index * hop_s seconds")
    label_id = add(LABEL_ID, schema_pb2.INT, [1], f"index into the label vocabulary, {UNLABELLED_ID} if unlabelled")
    label_id.int_domain.min = UNLABELLED_ID
    label_id.int_domain.max = max(len(labels) - 1, UNLABELLED_ID)
    label = add(LABEL, schema_pb2.BYTES, [1], "label name, empty if unlabelled")
    label.string_domain.name = LABEL
    label.string_domain.value.extend(labels)
    add(
        MEL,
        schema_pb2.BYTES,
        [1],
        f"log-mel in dB, little-endian float16, row-major {list(cfg.mel_shape)} "
        f"(frames x mels), feature config {cfg.version}",
    )
    add(MEL_SHAPE, schema_pb2.INT, [2], "[frames, n_mels] of mel")
    return schema


def tfmd_schema_text(cfg: FeatureConfig, labels: Sequence[str]) -> str:
    return text_format.MessageToString(tfmd_schema(cfg, labels))
