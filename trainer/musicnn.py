"""musicnn (Pons and Serra, 2019) in Keras 3: the pretrained backbone behind cattag's default models.

    mel [frames, 96] (schemas.features.MUSICNN, log10(1 + 10000 power))
      -> input batch norm
      -> front end: timbral Conv2D [7 x 38] and [7 x 67] (204 filters each), temporal Conv2D [128 x 1],
         [64 x 1], [32 x 1] (51 each); ReLU, then batch norm, then max over frequency     -> [T, 561]
      -> mid end: three Conv1D of 7 frames to 64 channels (ReLU, batch norm), the 2nd and 3rd residual;
         the front end and the three outputs concatenated                               -> [T, 753]
      -> back end: max and mean over time, interleaved per channel (`pooled`, 1506), batch norm,
         dense 200 ReLU, batch norm (`penultimate`), dense 50, sigmoid (`taggram`)

The layer order, paddings and the interleaving follow the original TF1 graph exactly (its "SAME"
padding for the even temporal kernels is asymmetric, as Keras's on TensorFlow); batch norm comes
after the ReLU there, so here too. Weights come from the original checkpoints through
trainer/pretrained.py, which assigns each variable by its TF1 name (CHECKPOINT_NAMES) and fails on
any that is left over or missing. Nothing here imports the original package or TF1 APIs.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from trainer.models import FreqMax

# The outputs a musicnn backbone model returns, by name.
TAGGRAM = "taggram"  # [50] sigmoid tag scores
PENULTIMATE = "penultimate"  # [200] the dense layer's batch-normalized output
POOLED = "pooled"  # [1506] max and mean over time of the mid end, interleaved
MEAN_POOL = "mean_pool"  # [753]
MAX_POOL = "max_pool"  # [753]
OUTPUTS = (TAGGRAM, PENULTIMATE, POOLED, MEAN_POOL, MAX_POOL)
# The output stored as a track's embedding (similarity search, typicality, transfer heads): chosen by
# same-genre precision@5 over real music (bench/embedding_layers.py, bench/RESULTS.md).
EMBEDDING_OUTPUT = PENULTIMATE

_EPSILON = 1e-3  # tf.compat.v1.layers.batch_normalization's default, as Keras's
_TIMBRAL = (("timbral_74", 0.4), ("timbral_77", 0.7))  # kernel height 7 over 40% and 70% of the mel bins
_TEMPORAL = (("temporal_128", 128), ("temporal_64", 64), ("temporal_32", 32))


@keras.saving.register_keras_serializable(package="cattag")
class MaxMeanPool(layers.Layer):
    """[batch, time, channels] -> [batch, 2 * channels]: per channel its max and mean over time,
    interleaved (max0, mean0, max1, ...): the original concatenated [max, mean] on a new last axis
    and flattened, and its dense layer's weights expect that order."""

    def call(self, x):
        pooled = keras.ops.stack([keras.ops.max(x, axis=1), keras.ops.mean(x, axis=1)], axis=-1)
        return keras.ops.reshape(pooled, (-1, 2 * x.shape[-1]))


def _bn(name: str):
    return layers.BatchNormalization(epsilon=_EPSILON, name=name)


def build(*, n_frames: int | None = 187, n_mels: int = 96, n_tags: int = 50, midend_filters: int = 64,
          backend_units: int = 200, name: str = "musicnn") -> keras.Model:
    """The musicnn graph, from log-mel [n_frames, n_mels] to the named OUTPUTS.

    `n_frames` None accepts any patch length (the model pools over time); the pretrained weights were
    trained on 187-frame (3 s) patches.
    """
    mel = keras.Input(shape=(n_frames, n_mels), name="mel")
    image = layers.Reshape((-1, n_mels, 1), name="expand")(mel)
    normalized = _bn("input_bn")(image)

    front = []
    padded = layers.ZeroPadding2D(((3, 3), (0, 0)), name="timbral_pad")(normalized)  # 'same' over time only
    filters = int(1.6 * 128)
    for label, share in _TIMBRAL:
        y = layers.Conv2D(filters, (7, int(share * n_mels)), activation="relu", name=f"{label}_conv")(padded)
        front.append(FreqMax(name=f"{label}_pool")(_bn(f"{label}_bn")(y)))
    for label, height in _TEMPORAL:
        y = layers.Conv2D(int(1.6 * 32), (height, 1), padding="same", activation="relu", name=f"{label}_conv")(normalized)
        front.append(FreqMax(name=f"{label}_pool")(_bn(f"{label}_bn")(y)))
    front = layers.Concatenate(name="frontend")(front)

    mids = [front]
    y = front
    for i in (1, 2, 3):
        conv = layers.Conv1D(midend_filters, 7, padding="same", activation="relu", name=f"midend{i}_conv")(y)
        conv = _bn(f"midend{i}_bn")(conv)
        y = conv if i == 1 else layers.Add(name=f"midend{i}_residual")([conv, y])
        mids.append(y)
    midend = layers.Concatenate(name="midend")(mids)

    pooled = MaxMeanPool(name=POOLED)(midend)
    x = _bn("backend_bn")(pooled)
    x = layers.Dropout(0.5, name="backend_dropout")(x)
    x = layers.Dense(backend_units, activation="relu", name="penultimate_dense")(x)
    penultimate = _bn(PENULTIMATE)(x)
    x = layers.Dropout(0.5, name="penultimate_dropout")(penultimate)
    logits = layers.Dense(n_tags, name="logits")(x)
    taggram = layers.Activation("sigmoid", dtype="float32", name=TAGGRAM)(logits)
    mean_pool = layers.GlobalAveragePooling1D(name=MEAN_POOL)(midend)
    max_pool = layers.GlobalMaxPooling1D(name=MAX_POOL)(midend)
    return keras.Model(mel, {TAGGRAM: taggram, PENULTIMATE: penultimate, POOLED: pooled, MEAN_POOL: mean_pool,
                             MAX_POOL: max_pool}, name=name)


# Keras layer -> the TF1 variable scope that holds its weights in the original checkpoints, in the
# order the original graph created them (tf.compat.v1.layers numbers each kind of layer in turn).
CHECKPOINT_NAMES = {
    "input_bn": "batch_normalization",
    "timbral_74_conv": "conv2d", "timbral_74_bn": "batch_normalization_1",
    "timbral_77_conv": "conv2d_1", "timbral_77_bn": "batch_normalization_2",
    "temporal_128_conv": "conv2d_2", "temporal_128_bn": "batch_normalization_3",
    "temporal_64_conv": "conv2d_3", "temporal_64_bn": "batch_normalization_4",
    "temporal_32_conv": "conv2d_4", "temporal_32_bn": "batch_normalization_5",
    "midend1_conv": "conv2d_5", "midend1_bn": "batch_normalization_6",
    "midend2_conv": "conv2d_6", "midend2_bn": "batch_normalization_7",
    "midend3_conv": "conv2d_7", "midend3_bn": "batch_normalization_8",
    "backend_bn": "batch_normalization_9",
    "penultimate_dense": "dense", PENULTIMATE: "batch_normalization_10",
    "logits": "dense_1",
}
# Keras weight name -> TF1 variable name within the scope.
_VARIABLE_NAMES = {"kernel": "kernel", "bias": "bias", "gamma": "gamma", "beta": "beta",
                   "moving_mean": "moving_mean", "moving_variance": "moving_variance"}


def assign_checkpoint(model: keras.Model, variables: dict[str, np.ndarray]) -> None:
    """Sets every weight of `model` from a TF1 checkpoint's {name: array} (optimizer slots and
    counters excluded by the caller). Raises ValueError naming any variable that is unmatched on
    either side or has a shape that cannot be the same tensor."""
    used = set()
    for layer_name, scope in CHECKPOINT_NAMES.items():
        layer = model.get_layer(layer_name)
        values = []
        for weight in layer.weights:
            key = f"{scope}/{_VARIABLE_NAMES[weight.name.split('/')[-1]]}"
            if key not in variables:
                raise ValueError(f"checkpoint has no {key} for {layer_name}/{weight.name}")
            value = variables[key]
            if value.shape != tuple(weight.shape):
                # Mid-end Conv2D kernels [7, C, 1, F] over a [T, C, 1] image are Conv1D kernels [7, C, F].
                if value.size != int(np.prod(weight.shape)) or value.shape[2] != 1:
                    raise ValueError(f"{key} has shape {value.shape}; {layer_name}/{weight.name} needs {tuple(weight.shape)}")
                value = value.reshape(tuple(weight.shape))
            values.append(value)
            used.add(key)
        layer.set_weights(values)
    left = sorted(set(variables) - used)
    if left:
        raise ValueError(f"checkpoint variables not used by the Keras model: {left}")
    unassigned = [layer.name for layer in model.layers if layer.weights and layer.name not in CHECKPOINT_NAMES]
    if unassigned:
        raise ValueError(f"Keras layers with no checkpoint weights: {unassigned}")
