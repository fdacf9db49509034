"""Genre models. Each takes raw log-mel in dB [frames, n_mels], normalizes it per mel bin with the
training statistics (so the exported model needs nothing but log-mels), and ends in a layer named
`embedding` before the softmax `probabilities`.

- cnn2d: the classic tutorial network for GTZAN: three Conv2D + max-pool + batch-norm blocks, a
  dense layer, dropout, softmax.
- cnn1d: Conv1D over time with the mel bins as channels, then global pooling (Dieleman and
  Schrauwen's end-to-end style), the other common baseline.
- resnet (default): a short-chunk residual CNN in the spirit of Won et al. (2020): a strided,
  pooled stem, 3x3 residual blocks with max-pooling, then average and max pooling over time only,
  so it is indifferent to when a pattern occurs in a segment but keeps where in the spectrum it
  occurs (frequency-aware).
- bandstats: per-band statistics over time into a small MLP (a low-capacity reference).
- musicnn: the musically motivated front end of Pons et al. (2018): vertical "timbral" filters
  spanning 90% and 40% of the mel bins, max-pooled over frequency, and long "temporal" filters
  over the loudness envelope, then residual Conv1D layers and mean+max pooling over time.
  Measured, not chosen: bench/RESULTS.md has it behind the default on GTZAN-dev.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np
from keras import layers

# Batch-norm moving statistics with Keras's default momentum (0.99) need hundreds of steps to
# settle; a small catalogue gives a dozen steps an epoch, and evaluation then runs on stale
# statistics (validation stuck at chance while training accuracy climbs). 0.9 settles in ~20 steps.
_BN_MOMENTUM = 0.9
EMBEDDING = "embedding"
PROBABILITIES = "probabilities"
DEFAULT_ARCH = "resnet"


def _cnn2d(x):
    x = layers.Reshape((*x.shape[1:], 1))(x)
    for kernel, pool in ((3, 3), (3, 3), (2, 2)):
        x = layers.Conv2D(32, kernel, activation="relu")(x)
        x = layers.MaxPooling2D(pool, strides=2, padding="same")(x)
        x = layers.BatchNormalization(momentum=_BN_MOMENTUM)(x)
    x = layers.Flatten()(x)
    return layers.Dense(64, activation="relu", name=EMBEDDING)(x)


def _cnn1d(x):
    for filters in (128, 128, 256):
        x = layers.Conv1D(filters, 4, padding="same")(x)
        x = layers.BatchNormalization(momentum=_BN_MOMENTUM)(x)
        x = layers.Activation("relu")(x)
        x = layers.MaxPooling1D(2)(x)
    x = layers.Concatenate()([layers.GlobalAveragePooling1D()(x), layers.GlobalMaxPooling1D()(x)])
    return layers.Dense(128, activation="relu", name=EMBEDDING)(x)


def _residual_block(x, filters: int):
    shortcut = x if x.shape[-1] == filters else layers.Conv2D(filters, 1, use_bias=False)(x)
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
    y = layers.BatchNormalization(momentum=_BN_MOMENTUM)(y)
    y = layers.Activation("relu")(y)
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False)(y)
    y = layers.BatchNormalization(momentum=_BN_MOMENTUM)(y)
    return layers.Activation("relu")(layers.Add()([shortcut, y]))


@keras.saving.register_keras_serializable(package="cattag")
class TimePooling(layers.Layer):
    """[batch, time, freq, channels] -> [batch, freq, 2 * channels]: mean and max over time only.

    Pooling over time makes the model indifferent to where in a segment a pattern occurs; keeping
    the frequency axis keeps where in the spectrum it occurs (bass-heavy or bright), which is much
    of what tells genres apart.
    """

    def call(self, x):
        return keras.ops.concatenate([keras.ops.mean(x, axis=1), keras.ops.max(x, axis=1)], axis=-1)


def _resnet(x):
    x = layers.Reshape((*x.shape[1:], 1))(x)
    x = layers.Conv2D(32, 3, strides=2, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization(momentum=_BN_MOMENTUM)(x)
    x = layers.Activation("relu")(x)
    # Pooling the stem output (33 x 32 instead of 65 x 64 into the first block) makes the model
    # 3.5x cheaper, which tagging on CPU needs, and it measured no less accurate (bench/RESULTS.md).
    x = layers.MaxPooling2D(2, padding="same")(x)
    for filters in (32, 64, 128):
        x = _residual_block(x, filters)
        x = layers.MaxPooling2D(2, padding="same")(x)
    x = layers.Flatten()(TimePooling()(x))
    x = layers.Dropout(0.3)(x)
    return layers.Dense(128, activation="relu", name=EMBEDDING)(x)


@keras.saving.register_keras_serializable(package="cattag")
class BandStatistics(layers.Layer):
    """[batch, time, mels] -> [batch, 4 * mels]: per mel band, the mean, standard deviation and
    max over time, and the mean absolute frame-to-frame change (how much the band moves)."""

    def call(self, x):
        flux = keras.ops.mean(keras.ops.abs(x[:, 1:] - x[:, :-1]), axis=1)
        return keras.ops.concatenate(
            [keras.ops.mean(x, axis=1), keras.ops.std(x, axis=1), keras.ops.max(x, axis=1), flux], axis=-1)


def _bandstats(x):
    x = BandStatistics()(x)
    x = layers.BatchNormalization(momentum=_BN_MOMENTUM)(x)
    x = layers.Dropout(0.2)(x)
    x = layers.Dense(256, activation="relu")(x)
    x = layers.Dropout(0.3)(x)
    return layers.Dense(128, activation="relu", name=EMBEDDING)(x)


@keras.saving.register_keras_serializable(package="cattag")
class FreqMax(layers.Layer):
    """[batch, time, freq, channels] -> [batch, time, channels]: max over frequency."""

    def call(self, x):
        return keras.ops.max(x, axis=2)


@keras.saving.register_keras_serializable(package="cattag")
class FreqMean(layers.Layer):
    """[batch, time, freq] -> [batch, time, 1]: the mean over frequency (a loudness envelope)."""

    def call(self, x):
        return keras.ops.mean(x, axis=2, keepdims=True)


def _conv_bn_relu(x, conv):
    x = conv(x)
    x = layers.BatchNormalization(momentum=_BN_MOMENTUM)(x)
    return layers.Activation("relu")(x)


def _musicnn(x):
    n_mels = x.shape[-1]
    image = layers.Reshape((*x.shape[1:], 1))(x)
    timbral = []
    for height in (7, 3):
        for share in (0.9, 0.4):
            padded = layers.ZeroPadding2D(((height // 2, height // 2), (0, 0)))(image)
            y = _conv_bn_relu(padded, layers.Conv2D(32, (height, int(share * n_mels)), use_bias=False))
            timbral.append(FreqMax()(y))
    envelope = FreqMean()(x)
    temporal = [_conv_bn_relu(envelope, layers.Conv1D(16, k, padding="same", use_bias=False)) for k in (16, 32, 64)]
    front = layers.Concatenate()(timbral + temporal)
    mids = [front]
    y = _conv_bn_relu(front, layers.Conv1D(64, 7, padding="same", use_bias=False))
    mids.append(y)
    for _ in range(2):
        y = layers.Add()([y, _conv_bn_relu(y, layers.Conv1D(64, 7, padding="same", use_bias=False))])
        mids.append(y)
    y = layers.Concatenate()(mids)
    y = layers.Concatenate()([layers.GlobalAveragePooling1D()(y), layers.GlobalMaxPooling1D()(y)])
    y = layers.BatchNormalization(momentum=_BN_MOMENTUM)(y)
    y = layers.Dropout(0.5)(y)
    return layers.Dense(200, activation="relu", name=EMBEDDING)(y)


ARCHITECTURES: dict[str, Callable] = {"cnn2d": _cnn2d, "cnn1d": _cnn1d, "resnet": _resnet, "bandstats": _bandstats,
                                      "musicnn": _musicnn}


def build(
    arch: str, *, mel_shape: tuple[int, int], n_classes: int, mel_mean: np.ndarray, mel_std: np.ndarray,
    dropout: float = 0.3,
) -> keras.Model:
    """A model from log-mel [frames, n_mels] in dB to class probabilities."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"--arch {arch!r}: expected one of {', '.join(ARCHITECTURES)}")
    mel = keras.Input(shape=mel_shape, name="mel")
    x = layers.Normalization(axis=-1, mean=mel_mean, variance=np.square(mel_std), name="normalize")(mel)
    embedding = ARCHITECTURES[arch](x)
    x = layers.Dropout(dropout)(embedding)
    # float32 output even under mixed precision: softmax in float16 loses small probabilities.
    probabilities = layers.Dense(n_classes, activation="softmax", dtype="float32", name=PROBABILITIES)(x)
    return keras.Model(mel, probabilities, name=arch)


def with_embedding(model: keras.Model) -> keras.Model:
    """The same weights, returning (probabilities, embedding): what the exported model serves."""
    embedding = layers.Activation("linear", dtype="float32", name="embedding_f32")(model.get_layer(EMBEDDING).output)
    return keras.Model(model.input, {PROBABILITIES: model.output, EMBEDDING: embedding})
