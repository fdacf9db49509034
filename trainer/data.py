"""tf.data input from featurize's TFRecord shards, parsed with the schema of schemas/.

    files -> shuffle -> interleave(TFRecordDataset, parallel) -> shuffle -> batch -> parse (vectorized)
          -> [training: SpecAugment, gain, mixup] -> prefetch

Nothing is loaded whole: shards stream through a bounded shuffle buffer, so a data set larger
than memory trains.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import tensorflow as tf

from schemas import examples
from schemas.features import FeatureConfig, FeatureConfigMismatch, check_compatible
from schemas.featurize_metadata import METADATA_FILE, FeaturizeMetadata, MetadataError

AUTOTUNE = tf.data.AUTOTUNE


class DataError(ValueError):
    """The featurize output cannot be used for training or evaluation."""


@dataclasses.dataclass(frozen=True)
class DataInfo:
    """What the trainer needs from metadata.json."""

    cfg: FeatureConfig
    labels: list[str]
    mel_mean: np.ndarray  # [n_mels]
    mel_std: np.ndarray  # [n_mels]
    metadata: FeaturizeMetadata

    @property
    def counts(self) -> dict[str, dict[str, dict[str, int]]]:
        """split -> label -> counts"""
        return self.metadata.counts

    def segments(self, split: str) -> int:
        return self.metadata.segments(split)

    def class_weights(self) -> np.ndarray:
        """Inverse-frequency weights over training segments, mean 1 ("balanced")."""
        per_label = np.array([self.counts["train"].get(label, {}).get("segments", 0) for label in self.labels], float)
        weights = np.where(per_label > 0, per_label.sum() / (len(self.labels) * np.maximum(per_label, 1)), 0.0)
        return weights.astype(np.float32)


def read_data_info(data_dir: str, *, expected: FeatureConfig | None = None) -> DataInfo:
    """Reads DIR/metadata.json; refuses data whose feature config differs from `expected`."""
    path = f"{data_dir.rstrip('/')}/{METADATA_FILE}"
    if not tf.io.gfile.exists(path):
        raise DataError(f"{data_dir} has no {METADATA_FILE}: is it a `cattag featurize` output?")
    with tf.io.gfile.GFile(path) as handle:
        try:
            metadata = FeaturizeMetadata.from_json(handle.read())
        except MetadataError as err:
            raise DataError(f"{path}: {err}") from err
    try:
        cfg = FeatureConfig.from_dict(metadata.feature_config)
    except (TypeError, ValueError) as err:
        raise DataError(f"{path}: unreadable feature config: {err}") from err
    if expected is not None:
        check_compatible(expected, cfg, what=f"the data in {data_dir}")
    stats = metadata.mel_stats
    if not stats.get("frames"):
        raise DataError(f"{path}: no training statistics (the train split is empty)")
    std = np.asarray(stats["std"], np.float32)
    return DataInfo(
        cfg=cfg,
        labels=list(metadata.labels),
        mel_mean=np.asarray(stats["mean"], np.float32),
        mel_std=np.where(std > 1e-3, std, 1.0).astype(np.float32),  # a constant bin must not blow up
        metadata=metadata,
    )


def shard_files(data_dir: str, split: str) -> list[str]:
    files = sorted(tf.io.gfile.glob(f"{data_dir.rstrip('/')}/{split}/part-*{examples.TFRECORD_SUFFIX}"))
    if not files:
        raise DataError(f"{data_dir}/{split}/ holds no TFRecord shards")
    return files


def parse_batch(serialized: tf.Tensor, cfg: FeatureConfig) -> dict[str, tf.Tensor]:
    """A batch of serialized Examples -> {'mel': [B, T, M] float32, 'label_id', 'track_id', ...}."""
    parsed = tf.io.parse_example(serialized, examples.feature_spec(cfg))
    parsed[examples.MEL] = examples.decode_mel(parsed[examples.MEL], cfg)
    return parsed


def make_dataset(
    data_dir: str,
    split: str,
    *,
    info: DataInfo,
    batch_size: int,
    training: bool,
    seed: int = 0,
    shuffle_buffer: int = 4096,
    augment: Augment | None = None,
) -> tf.data.Dataset:
    """Training: (mel, one-hot label, sample weight) batches, shuffled and augmented, repeating
    is left to Keras epochs. Evaluation: dicts with mel, label_id and track_id, in file order."""
    cfg = info.cfg
    paths = shard_files(data_dir, split)
    files = tf.data.Dataset.from_tensor_slices(paths)
    if training:
        files = files.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    records = files.interleave(
        lambda f: tf.data.TFRecordDataset(f, compression_type="GZIP"),
        cycle_length=4, num_parallel_calls=AUTOTUNE, deterministic=not training,
    )
    if training:
        records = records.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    batches = records.batch(batch_size, drop_remainder=False).map(
        lambda s: parse_batch(s, cfg), num_parallel_calls=AUTOTUNE, deterministic=not training
    )
    if not training:
        return batches.prefetch(AUTOTUNE)
    n_classes = len(info.labels)
    weights = tf.constant(info.class_weights())

    def to_training(batch):
        labelled = batch[examples.LABEL_ID] >= 0
        mel = tf.boolean_mask(batch[examples.MEL], labelled)
        label = tf.boolean_mask(batch[examples.LABEL_ID], labelled)
        return mel, tf.one_hot(label, n_classes), tf.gather(weights, label)

    dataset = batches.map(to_training, num_parallel_calls=AUTOTUNE)
    if augment is not None:
        dataset = dataset.map(augment, num_parallel_calls=AUTOTUNE)
    # Labels are masked inside batches, so the batch count is known: telling tf.data lets Keras show a
    # real progress bar and stops it warning that the input "ran out of data".
    return dataset.apply(_known_batches(info.segments(split), batch_size)).prefetch(AUTOTUNE)


def labelled_segments(data_dir: str, split: str, *, info: DataInfo, batch_size: int) -> tf.data.Dataset:
    """(mel, one-hot label) batches of a split's labelled segments, in file order, with a known batch
    count: what Keras takes as validation data (unlabelled segments are masked out of each batch)."""
    n_classes = len(info.labels)

    def labelled(batch):
        keep = batch[examples.LABEL_ID] >= 0
        return (tf.boolean_mask(batch[examples.MEL], keep),
                tf.one_hot(tf.boolean_mask(batch[examples.LABEL_ID], keep), n_classes))

    dataset = make_dataset(data_dir, split, info=info, batch_size=batch_size, training=False)
    return dataset.map(labelled).apply(_known_batches(info.segments(split), batch_size))


def _known_batches(segments: int, batch_size: int):
    return tf.data.experimental.assert_cardinality(math.ceil(segments / batch_size))


@dataclasses.dataclass(frozen=True)
class Augment:
    """Training-time augmentation on a batch of log-mels in dB (before normalization).

    SpecAugment (Park et al., 2019): `time_masks` masks of up to `time_mask_frames` frames and
    `freq_masks` masks of up to `freq_mask_bins` bins, filled with the batch mean; a random gain of
    +-`gain_db` (an additive shift in dB, as a louder or quieter master); and mixup (Zhang et al.,
    2018) with Beta(`mixup_alpha`) weights on mel, labels and sample weights.
    """

    time_masks: int = 2
    time_mask_frames: int = 20
    freq_masks: int = 2
    freq_mask_bins: int = 16
    gain_db: float = 6.0
    mixup_alpha: float = 0.2

    def __call__(self, mel: tf.Tensor, label: tf.Tensor, weight: tf.Tensor):
        batch = tf.shape(mel)[0]
        frames, bins = tf.shape(mel)[1], tf.shape(mel)[2]
        fill = tf.reduce_mean(mel)
        keep = tf.ones_like(mel, dtype=tf.bool)
        for _ in range(self.time_masks):
            keep &= _band_mask(batch, frames, self.time_mask_frames)[:, :, None]
        for _ in range(self.freq_masks):
            keep &= _band_mask(batch, bins, self.freq_mask_bins)[:, None, :]
        mel = tf.where(keep, mel, fill)
        if self.gain_db:
            mel += tf.random.uniform([batch, 1, 1], -self.gain_db, self.gain_db)
        if self.mixup_alpha:
            lam = _beta(batch, self.mixup_alpha)
            order = tf.random.shuffle(tf.range(batch))
            mel = lam[:, None, None] * mel + (1 - lam[:, None, None]) * tf.gather(mel, order)
            label = lam[:, None] * label + (1 - lam[:, None]) * tf.gather(label, order)
            weight = lam * weight + (1 - lam) * tf.gather(weight, order)
        return mel, label, weight


def _band_mask(batch: tf.Tensor, length: tf.Tensor, max_width: int) -> tf.Tensor:
    """[batch, length] bools, False inside one random band of width 0..max_width per row."""
    width = tf.random.uniform([batch, 1], 0, max_width + 1, dtype=tf.int32)
    room = tf.cast(length - width + 1, tf.float32)  # per row: tf.random.uniform wants a scalar maxval
    start = tf.cast(tf.random.uniform([batch, 1]) * room, tf.int32)
    positions = tf.range(length)[None, :]
    return ~((positions >= start) & (positions < start + width))


def _beta(batch: tf.Tensor, alpha: float) -> tf.Tensor:
    a = tf.random.gamma([batch], alpha)
    b = tf.random.gamma([batch], alpha)
    return a / (a + b)


def check_model_matches_data(model_cfg: FeatureConfig, data_dir: str) -> DataInfo:
    """For evaluate (and the tagger): the data must be computed with the model's feature config."""
    try:
        return read_data_info(data_dir, expected=model_cfg)
    except FeatureConfigMismatch as err:
        raise FeatureConfigMismatch(f"refusing to mix model and data: {err}") from err
