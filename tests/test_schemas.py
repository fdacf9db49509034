"""schemas/: config versioning, example encoding, the TFMD schema and a tf.data round trip."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2

from schemas import examples
from schemas.features import FeatureConfig, FeatureConfigMismatch, SegmentPolicy, check_compatible


def test_version_is_a_stable_content_hash():
    assert FeatureConfig().version == FeatureConfig().version
    # A golden value: the version must not drift between releases for the same parameters, or
    # every model would refuse every data set written before.
    assert FeatureConfig().version == "c77fc59508ff"
    assert FeatureConfig(n_mels=96).version != FeatureConfig().version


def test_from_dict_round_trips_and_detects_tampering():
    cfg = FeatureConfig(n_mels=64, segment_s=2.0)
    assert FeatureConfig.from_dict(cfg.to_dict()) == cfg
    tampered = {**cfg.to_dict(), "n_mels": 65}
    with pytest.raises(FeatureConfigMismatch, match="hash to"):
        FeatureConfig.from_dict(tampered)
    with pytest.raises(FeatureConfigMismatch, match="newer version"):
        FeatureConfig.from_dict({**cfg.to_dict(), "pcen": True})


def test_check_compatible_names_each_difference():
    with pytest.raises(FeatureConfigMismatch) as err:
        check_compatible(FeatureConfig(), FeatureConfig(n_mels=96, hop_length=256), what="data in /x")
    message = str(err.value)
    assert "n_mels: 96 (expected 128)" in message and "hop_length: 256 (expected 512)" in message
    check_compatible(FeatureConfig(), FeatureConfig(), what="same")  # no error


@pytest.mark.parametrize(
    "bad, fragment",
    [({"n_fft": 1000}, "power of two"), ({"fmax_hz": 20000.0}, "fmax_hz"), ({"sample_rate_hz": 100}, "sample_rate_hz"),
     ({"segment_s": 0.01}, "shorter than one FFT")],
)
def test_invalid_configs_are_refused_with_the_reason(bad, fragment):
    with pytest.raises(ValueError, match=fragment):
        FeatureConfig(**bad)


def test_segment_policy_validates():
    with pytest.raises(ValueError, match="short_tracks"):
        SegmentPolicy(short_tracks="trim")
    assert SegmentPolicy().to_dict()["hop_s"] == 3.0


def test_shapes_follow_the_config():
    cfg = FeatureConfig()
    assert cfg.segment_samples == 66150
    assert cfg.mel_shape == (130, 128)


def _example(cfg: FeatureConfig, track_id: str = "blues/ü 1", index: int = 3) -> tuple[bytes, np.ndarray]:
    mel = np.random.default_rng(0).uniform(-100, 40, cfg.mel_shape).astype(np.float32)
    serialized = examples.encode_example(track_id=track_id, segment_index=index, label_id=2, label="jazz", mel=mel)
    return serialized, mel


def test_encode_decode_round_trip_keeps_float16_precision():
    cfg = FeatureConfig()
    serialized, mel = _example(cfg)
    decoded = examples.decode_example(serialized)
    assert decoded[examples.TRACK_ID] == "blues/ü 1"
    assert decoded[examples.SEGMENT_INDEX] == 3
    assert (decoded[examples.LABEL_ID], decoded[examples.LABEL]) == (2, "jazz")
    assert decoded[examples.MEL].shape == cfg.mel_shape
    # float16 has an 11-bit significand: 0.04 dB at 100 dB.
    np.testing.assert_allclose(decoded[examples.MEL], mel, atol=0.04)


def test_tf_data_parses_with_the_declared_spec():
    cfg = FeatureConfig(n_mels=32, segment_s=1.0)
    serialized, mel = _example(cfg)
    batch = tf.io.parse_example(tf.constant([serialized, serialized]), examples.feature_spec(cfg))
    decoded = examples.decode_mel(batch[examples.MEL], cfg)
    assert decoded.shape == (2, *cfg.mel_shape)
    np.testing.assert_allclose(decoded.numpy()[1], mel, atol=0.04)
    assert batch[examples.MEL_SHAPE].numpy().tolist() == [list(cfg.mel_shape)] * 2


def test_tfmd_schema_describes_every_encoded_feature():
    cfg = FeatureConfig()
    schema = text_format.Parse(examples.tfmd_schema_text(cfg, ["blues", "jazz"]), schema_pb2.Schema())
    by_name = {f.name: f for f in schema.feature}
    serialized, _ = _example(cfg)
    encoded = tf.train.Example.FromString(serialized).features.feature
    assert set(by_name) == set(encoded) == set(examples.feature_spec(cfg))
    assert list(by_name[examples.LABEL].string_domain.value) == ["blues", "jazz"]
    assert by_name[examples.LABEL_ID].int_domain.max == 1
    assert cfg.version in by_name[examples.MEL].annotation.comment[0]
    assert [d.size for d in by_name[examples.MEL_SHAPE].shape.dim] == [2]


def test_config_is_immutable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        FeatureConfig().n_mels = 3  # type: ignore[misc]
