"""transforms/audio.py on generated files and real catalogue audio."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import make_bad_files, make_good_files, tone
from transforms.audio import AudioError, decode

SR = 22050


def dominant_hz(samples: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / sr)[spectrum.argmax()])


@pytest.fixture(scope="module")
def good_files(tmp_path_factory) -> tuple[pathlib.Path, dict[str, float]]:
    folder = tmp_path_factory.mktemp("good")
    return folder, make_good_files(folder)


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> tuple[pathlib.Path, dict[str, str]]:
    folder = tmp_path_factory.mktemp("bad")
    return folder, make_bad_files(folder)


def test_odd_rates_channels_and_names_decode_to_mono_at_the_target_rate(good_files):
    folder, expected = good_files
    for name, seconds in expected.items():
        decoded = decode(str(folder / name), sample_rate_hz=SR, max_duration_s=60)
        assert decoded.samples.ndim == 1 and decoded.samples.dtype == np.float32, name
        assert decoded.sample_rate_hz == SR
        assert decoded.duration_s == pytest.approx(seconds, abs=0.01), name


@pytest.mark.parametrize("source_rate", [8000, 16000, 44100, 48000, 96000, 192000])
def test_resampling_keeps_a_tone_at_its_frequency(tmp_path, source_rate):
    path = tmp_path / f"tone-{source_rate}.wav"
    sf.write(path, tone(1000, 2.0, sr=source_rate, channels=2), source_rate, subtype="FLOAT")
    decoded = decode(str(path), sample_rate_hz=SR, max_duration_s=60)
    assert decoded.source_sample_rate_hz == source_rate and decoded.source_channels == 2
    assert dominant_hz(decoded.samples, SR) == pytest.approx(1000, abs=1.0)
    # Downmixing identical channels keeps the level; a good resampler keeps it too.
    assert np.abs(decoded.samples[SR // 2: -SR // 2]).max() == pytest.approx(0.5, abs=0.01)


def test_each_bad_file_fails_at_its_stage_with_a_reason(bad_files):
    folder, expected = bad_files
    for name, stage in expected.items():
        if stage != "read" and stage != "decode":
            continue  # silence decodes fine: the segment stage refuses it
        with pytest.raises(AudioError) as err:
            decode(str(folder / name), sample_rate_hz=SR, max_duration_s=60)
        assert err.value.stage == stage, (name, err.value.reason)
        assert len(err.value.reason) > 10, name


@pytest.mark.parametrize(
    "name, fragment",
    [("empty.wav", "empty (0 bytes)"), ("truncated.wav", "truncated"), ("notes.mp3", "corrupt or not audio"),
     ("nan.wav", "NaN or infinite"), ("inf.wav", "NaN or infinite"), ("truncated.flac", "corrupt or not audio"),
     ("wma-in-wav.wav", "corrupt or not audio")],
)
def test_reasons_are_readable(bad_files, name, fragment):
    folder, _ = bad_files
    with pytest.raises(AudioError, match=re.escape(fragment)):
        decode(str(folder / name), sample_rate_hz=SR, max_duration_s=60)


def test_missing_file_is_a_read_error(tmp_path):
    with pytest.raises(AudioError, match="no such file") as err:
        decode(str(tmp_path / "nope.flac"), sample_rate_hz=SR, max_duration_s=60)
    assert err.value.stage == "read"


def test_tracks_over_the_length_limit_are_refused_before_decoding(tmp_path):
    path = tmp_path / "long.flac"
    sf.write(path, tone(440, 12.0, sr=SR), SR)
    with pytest.raises(AudioError, match="too long: 0.2 min exceeds"):
        decode(str(path), sample_rate_hz=SR, max_duration_s=10)


def test_real_catalogue_mp3_and_ogg_decode(catalogue_sample_dir):
    for name in ("bensound-cute.mp3", "glacier-bay-humpback.ogg"):
        decoded = decode(str(catalogue_sample_dir / name), sample_rate_hz=SR, max_duration_s=600)
        assert decoded.duration_s > 30, name
        assert np.sqrt(np.mean(decoded.samples**2)) > 0.01, name


def test_an_opus_file_libsndfile_gives_up_on_decodes_through_ffmpeg(tmp_path, catalogue_sample_dir):
    """libsndfile 1.2 reads this valid Opus encoding (FFmpeg's, of a 22.05 kHz source) for 16 s and then calls
    it malformed; FFmpeg decodes it whole."""
    path = tmp_path / "vibe-ace.opus"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i",
                    str(catalogue_sample_dir / "Kevin_MacLeod_-_Vibe_Ace.ogg"), "-map", "0:a", "-c:a", "libopus",
                    "-b:a", "96k", str(path)], check=True)
    with pytest.raises(sf.LibsndfileError, match="malformed"):  # the failure the retry is for
        with sf.SoundFile(str(path)) as handle:
            for _ in handle.blocks(65536):
                pass
    decoded = decode(str(path), sample_rate_hz=SR, max_duration_s=600, loudness=True)
    assert decoded.duration_s == pytest.approx(61.46, abs=0.1) and decoded.loudness.loudness_lufs is not None


def _make_m4a(path: pathlib.Path) -> None:
    wav = path.with_suffix(".wav")
    sf.write(wav, tone(880, 3.0, sr=44100, channels=2), 44100)
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(wav), "-c:a", "aac", str(path)], check=True)


def test_m4a_decodes_through_ffmpeg(tmp_path):
    path = tmp_path / "clip.m4a"
    _make_m4a(path)
    decoded = decode(str(path), sample_rate_hz=SR, max_duration_s=60)
    assert decoded.duration_s == pytest.approx(3.0, abs=0.1)
    assert dominant_hz(decoded.samples, SR) == pytest.approx(880, abs=2.0)


def test_m4a_without_ffmpeg_says_what_to_install(tmp_path, monkeypatch):
    path = tmp_path / "clip.m4a"
    _make_m4a(path)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))  # a worker without FFmpeg
    with pytest.raises(AudioError, match="need FFmpeg.*install the ffmpeg package") as err:
        decode(str(path), sample_rate_hz=SR, max_duration_s=60)
    assert err.value.stage == "decode"
    assert os.environ["PATH"].endswith("empty-bin")
