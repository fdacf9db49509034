"""transforms/mel.py on synthesized signals, against librosa as the reference."""

from __future__ import annotations

import librosa
import numpy as np
import pytest

from schemas.features import MUSICNN, PRESETS, FeatureConfig
from tests.conftest import tone
from transforms.mel import hann_window, log_mel, mel_basis, mel_filters

CFG = FeatureConfig()


@pytest.fixture(scope="module")
def basis():
    return mel_basis(CFG)


def test_a_440_hz_tone_peaks_in_the_mel_bin_centred_nearest_440(basis):
    mel = log_mel(tone(440, CFG.segment_s, sr=CFG.sample_rate_hz), basis=basis)
    assert mel.shape == CFG.mel_shape and mel.dtype == np.float32
    centres = librosa.mel_frequencies(n_mels=CFG.n_mels + 2, fmin=CFG.fmin_hz, fmax=CFG.fmax_hz)[1:-1]
    expected_bin = int(np.argmin(np.abs(centres - 440)))
    peak_bins = mel[5:-5].argmax(axis=1)  # away from the zero-padded edges
    assert np.all(np.abs(peak_bins - expected_bin) <= 1), (set(peak_bins.tolist()), expected_bin)


def test_matches_librosa_melspectrogram_and_power_to_db(basis):
    rng = np.random.default_rng(1)
    samples = (tone(300, CFG.segment_s, sr=CFG.sample_rate_hz) + 0.05 * rng.standard_normal(CFG.segment_samples)).astype(np.float32)
    reference = librosa.power_to_db(
        librosa.feature.melspectrogram(
            y=samples, sr=CFG.sample_rate_hz, n_fft=CFG.n_fft, hop_length=CFG.hop_length, n_mels=CFG.n_mels,
            fmin=CFG.fmin_hz, fmax=CFG.fmax_hz, center=True, pad_mode="constant",
        ),
        ref=CFG.db_ref_power, amin=1e-10, top_db=None,
    ).T
    np.testing.assert_allclose(log_mel(samples, basis=basis), np.maximum(reference, CFG.db_floor), atol=0.05)


def test_the_reference_is_fixed_so_levels_compare_across_tracks(basis):
    loud = log_mel(tone(1000, CFG.segment_s, sr=CFG.sample_rate_hz, amplitude=0.5), basis=basis)
    quiet = log_mel(tone(1000, CFG.segment_s, sr=CFG.sample_rate_hz, amplitude=0.05), basis=basis)
    # 20 dB quieter input -> 20 dB lower output (a per-file max reference would make them equal).
    peak = loud[10].argmax()
    assert loud[10, peak] - quiet[10, peak] == pytest.approx(20.0, abs=0.01)


def test_silence_sits_at_the_floor(basis):
    mel = log_mel(np.zeros(CFG.segment_samples, np.float32), basis=basis)
    assert np.all(mel == CFG.db_floor)


def test_musicnn_config_matches_the_original_front_end():
    # musicnn's batch_data: librosa.feature.melspectrogram (librosa < 0.10: centred, reflect padding),
    # cast to float16, then log10(10000 x + 1). Its log is taken in float32 here (float16 overflows).
    cfg = MUSICNN
    rng = np.random.default_rng(2)
    samples = (tone(440, cfg.segment_s, sr=cfg.sample_rate_hz, amplitude=0.3)
               + 0.02 * rng.standard_normal(cfg.segment_samples)).astype(np.float32)
    power = librosa.feature.melspectrogram(y=samples, sr=cfg.sample_rate_hz, hop_length=cfg.hop_length,
                                           n_fft=cfg.n_fft, n_mels=cfg.n_mels, pad_mode="reflect").T
    reference = np.log10(10000 * power.astype(np.float16).astype(np.float32) + 1)
    mel = log_mel(samples, basis=mel_basis(cfg))
    assert mel.shape == (187, 96) == cfg.mel_shape
    np.testing.assert_allclose(mel, reference, atol=2e-3)
    assert float(np.abs(mel - reference).mean()) < 1e-4


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_filterbank_and_window_are_librosas(preset):
    cfg = PRESETS[preset]
    ours = mel_filters(cfg.sample_rate_hz, cfg.n_fft, cfg.n_mels, cfg.fmin_hz, cfg.fmax_hz)
    theirs = librosa.filters.mel(sr=cfg.sample_rate_hz, n_fft=cfg.n_fft, n_mels=cfg.n_mels, fmin=cfg.fmin_hz,
                                 fmax=cfg.fmax_hz)
    assert ours.dtype == np.float32 and ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(hann_window(cfg.n_fft), librosa.filters.get_window("hann", cfg.n_fft, fftbins=True),
                               atol=1e-12)


def test_filterbank_above_1_khz_follows_the_log_part_of_the_scale():
    ours = mel_filters(22050, 2048, 40, 500.0, 8000.0)
    np.testing.assert_allclose(ours, librosa.filters.mel(sr=22050, n_fft=2048, n_mels=40, fmin=500.0, fmax=8000.0),
                               rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(mel_filters(16000, 512, 20, 1200.0, None),
                               librosa.filters.mel(sr=16000, n_fft=512, n_mels=20, fmin=1200.0), rtol=1e-5, atol=1e-9)


def test_musicnn_scale_saturates_instead_of_overflowing():
    cfg = MUSICNN
    mel = log_mel(np.full(cfg.segment_samples, 1.0, np.float32), basis=mel_basis(cfg))  # a full-scale DC offset
    assert np.all(np.isfinite(mel)) and mel.max() <= np.log10(1 + 10000 * 65504.0) + 1e-3
    assert np.all(log_mel(np.zeros(cfg.segment_samples, np.float32), basis=mel_basis(cfg)) == 0.0)


def test_configs_written_before_the_new_fields_keep_their_version():
    # The hash of the default config before log_scale and pad_mode existed.
    assert FeatureConfig().version == "c77fc59508ff"
    assert MUSICNN.version != FeatureConfig().version
    assert FeatureConfig.from_dict(MUSICNN.to_dict()) == MUSICNN
