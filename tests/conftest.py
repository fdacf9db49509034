"""Shared fixtures: real data from ../shared/data, and generated audio where any signal will do."""

from __future__ import annotations

import csv
import os
import pathlib
import struct

import numpy as np
import pytest
import soundfile as sf

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SHARED_DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
GTZAN = SHARED_DATA / "gtzan-dev"
CATALOGUE_SAMPLE = SHARED_DATA / "catalogue-sample"


def require(path: pathlib.Path) -> pathlib.Path:
    # Not a skip: CI has ../shared beside the clone, and a missing copy is a broken setup.
    assert path.exists(), f"{path} is missing: tests read real audio from ../shared/data"
    return path


@pytest.fixture(scope="session")
def gtzan_dir() -> pathlib.Path:
    return require(GTZAN)


@pytest.fixture(scope="session")
def catalogue_sample_dir() -> pathlib.Path:
    return require(CATALOGUE_SAMPLE)


@pytest.fixture(scope="session")
def synthetic_features(tmp_path_factory) -> str:
    """A featurize output of a small synthetic labelled catalogue (4 styles x 5 tracks of 7 s)."""
    from pipelines import featurize, synthetic

    root = tmp_path_factory.mktemp("synthetic")
    synthetic.write_catalogue(root / "catalogue", tracks_per_style=5, seconds=7.0)
    featurize.run(["--input", str(root / "catalogue"), "--output", str(root / "features"), "--labels", "from-dirs",
                   "--splits", "60,20,20", "--progress", "off"])
    return str(root / "features")


@pytest.fixture(scope="session")
def small_model(synthetic_features, tmp_path_factory) -> tuple[str, dict]:
    """A real model trained from scratch for two epochs on `synthetic_features`: (model dir, model card)."""
    from trainer.task import TrainConfig, run

    model_dir = str(tmp_path_factory.mktemp("model"))
    card = run(TrainConfig(data_dir=synthetic_features, model_dir=model_dir, backbone="none", arch="cnn1d", epochs=2,
                           batch_size=16, verbose=0))
    return model_dir, card


@pytest.fixture(scope="session")
def gtzan_rows(gtzan_dir) -> list[dict[str, str]]:
    with open(gtzan_dir / "manifest.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def tone(freq_hz: float, seconds: float, *, sr: int, amplitude: float = 0.5, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    mono = (amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)
    return mono if channels == 1 else np.repeat(mono[:, None], channels, axis=1)


def write_wav_with_format_tag(path: pathlib.Path, tag: int, *, sr: int = 22050) -> None:
    """A WAV whose fmt chunk names a codec libsndfile does not implement (0x0161 is WMA)."""
    data = (tone(440, 1.0, sr=sr) * 32767).astype("<i2").tobytes()
    fmt = struct.pack("<HHIIHH", tag, 1, sr, sr * 2, 2, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)


# name -> (how to write it, stage it must fail at). Each is a kind of bad input DEVELOPERS.md lists.
def make_bad_files(folder: pathlib.Path) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    sr = 22050
    expected = {}

    (folder / "empty.wav").write_bytes(b"")
    expected["empty.wav"] = "read"

    sf.write(folder / "whole.flac", tone(330, 6.0, sr=sr), sr)
    data = (folder / "whole.flac").read_bytes()
    (folder / "truncated.flac").write_bytes(data[: len(data) // 2])
    (folder / "whole.flac").unlink()
    expected["truncated.flac"] = "decode"

    sf.write(folder / "whole.wav", tone(330, 6.0, sr=sr), sr, subtype="PCM_16")
    data = (folder / "whole.wav").read_bytes()
    (folder / "truncated.wav").write_bytes(data[: len(data) // 2])
    (folder / "whole.wav").unlink()
    expected["truncated.wav"] = "decode"

    (folder / "notes.mp3").write_text("a text file renamed to .mp3\n" * 20)
    expected["notes.mp3"] = "decode"

    write_wav_with_format_tag(folder / "wma-in-wav.wav", 0x0161)
    expected["wma-in-wav.wav"] = "decode"

    sf.write(folder / "silence.flac", np.zeros(sr * 5, np.float32), sr)
    expected["silence.flac"] = "segment"

    with_nan = tone(440, 4.0, sr=sr)
    with_nan[sr] = np.nan
    sf.write(folder / "nan.wav", with_nan, sr, subtype="FLOAT")
    expected["nan.wav"] = "decode"

    with_inf = tone(440, 4.0, sr=sr)
    with_inf[2 * sr] = np.inf
    sf.write(folder / "inf.wav", with_inf, sr, subtype="FLOAT")
    expected["inf.wav"] = "decode"
    return expected


def make_good_files(folder: pathlib.Path) -> dict[str, float]:
    """Odd but valid inputs: rates from 8 to 192 kHz, 1 to 8 channels, Unicode, spaces and brackets
    in names, a clip shorter than one segment. name -> duration in seconds."""
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for sr, channels, ext in ((8000, 1, "wav"), (11025, 2, "ogg"), (44100, 2, "flac"), (48000, 6, "wav"),
                              (96000, 1, "flac"), (192000, 8, "wav")):
        name = f"rate {sr} ch{channels}.{ext}"
        sf.write(folder / name, tone(440, 4.0, sr=sr, channels=channels), sr)
        written[name] = 4.0
    for name in ("Ünïcödé ♫ track.flac", "Song [live] (2024).ogg"):
        sf.write(folder / name, tone(523.25, 4.0, sr=22050), 22050)
        written[name] = 4.0
    sf.write(folder / "short.au", tone(660, 1.0, sr=16000), 16000)
    written["short.au"] = 1.0
    sf.write(folder / "aiff clip.aiff", tone(220, 3.5, sr=22050), 22050)
    written["aiff clip.aiff"] = 3.5
    return written


@pytest.fixture(scope="session")
def pretrained_cache() -> pathlib.Path:
    """Both musicnn presets, fetched from PyPI and converted once (the user's cache: a second run
    reuses it, a fresh machine downloads the 29 MB wheel)."""
    from schemas import presets
    from trainer import pretrained

    for name in presets.PRESETS:
        pretrained.fetch(name)
    return presets.cache_root()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Says where the artifacts written by this run are (the report's screenshot), for CI logs."""
    folder = pathlib.Path(os.environ.get("CATTAG_ARTIFACTS", pathlib.Path(__file__).resolve().parents[1] / ".ci" / "artifacts"))
    started = getattr(config, "_cattag_started", None)
    written = sorted(p for p in folder.glob("*") if started is None or p.stat().st_mtime >= started) if folder.is_dir() else []
    for path in written:
        terminalreporter.write_line(f"artifact: {path}")


def pytest_configure(config):
    import time

    config._cattag_started = time.time()
