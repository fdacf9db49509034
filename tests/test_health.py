"""Health checks on a fault corpus: one clean broadband stereo recording, and copies each carrying one
fault a distributor rejects (made with NumPy and FFmpeg); and on the clean GTZAN-dev clips."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf

from transforms.health import HealthMeter, flags

RATE = 44100


def measure(path):
    with sf.SoundFile(str(path)) as handle:
        meter = HealthMeter(handle.samplerate, handle.channels)
        for block in handle.blocks(50_000, dtype="float32", always_2d=True):  # blocks across every boundary
            meter.add(block)
    return meter.result()


def clean_recording(seconds: float = 30.0) -> np.ndarray:
    """Stereo "music": chords with harmonics to 20 kHz and independent noisy percussion per channel,
    peaking near -3 dBFS, no silence."""
    rng = np.random.default_rng(11)
    t = np.arange(int(seconds * RATE)) / RATE
    tones = sum(np.sin(2 * np.pi * f * t) / (1 + i) for i, f in enumerate((220, 277, 330, 440, 1760, 7040, 14080)))
    channels = []
    for _ in range(2):
        hits = np.resize(np.repeat(rng.uniform(0.0, 1.0, int(seconds * 8) + 1) > 0.5, RATE // 8), len(t))
        noise = rng.normal(0, 1, len(t)) * hits * np.exp(-np.mod(t, 0.125) * 30)
        channels.append(0.15 * tones + 0.2 * noise)
    audio = np.stack(channels, axis=1)
    return (0.7 * audio / np.abs(audio).max()).astype(np.float32)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, tuple]:
    """name -> (path, the one flag it must get; None for the clean one)."""
    ffmpeg = shutil.which("ffmpeg")
    assert ffmpeg, "ffmpeg is missing: `make test` installs it (system-deps)"
    folder = tmp_path_factory.mktemp("faults")
    clean = clean_recording()
    files = {}

    def write(name: str, audio: np.ndarray, fault: str | None, rate: int = RATE) -> None:
        sf.write(folder / name, audio, rate, subtype="PCM_24")
        files[name] = (folder / name, fault)

    write("clean.flac", clean, None)
    write("clipped.flac", np.clip(clean * 6.0, -1.0, 1.0), "clipping")
    write("dc-offset.flac", clean * 0.9 + 0.05, "dc offset")
    write("dual-mono.flac", np.repeat(clean[:, :1], 2, axis=1), "dual mono")
    gap = clean.copy()
    gap[12 * RATE:16 * RATE] = 0.0
    write("gap-4s.flac", gap, "gap")
    write("head-silence-8s.flac", np.concatenate([np.zeros((8 * RATE, 2), np.float32), clean]), "head silence")
    write("tail-silence-8s.flac", np.concatenate([clean, np.zeros((8 * RATE, 2), np.float32)]), "tail silence")

    def transcode(name: str, fault: str, *steps: list[str]) -> None:
        source = folder / "clean.flac"
        for index, step in enumerate(steps):
            target = folder / (name if index == len(steps) - 1 else f"{name}.step{index}.{step[-1]}")
            subprocess.run([ffmpeg, "-loglevel", "error", "-y", "-i", str(source), *step[:-1], str(target)], check=True)
            source = target
        files[name] = (folder / name, fault)

    # A lossy source saved as lossless: MP3 at 128 kb/s (LAME cuts near 16 kHz), decoded to FLAC.
    transcode("mp3-transcode.flac", "spectral cutoff", ["-b:a", "128k", "mp3"], ["-c:a", "flac", "flac"])
    # Up-sampled: 22.05 kHz audio saved at 96 kHz.
    transcode("upsampled-96k.flac", "spectral cutoff", ["-ar", "22050", "wav"], ["-ar", "96000", "flac"])
    return files


def test_each_fault_is_flagged_and_nothing_else(corpus):
    for name, (path, fault) in corpus.items():
        found = flags(measure(path))
        assert found == ([fault] if fault else []), (name, found, measure(path))


def test_the_measured_values_say_how_much(corpus):
    gap = measure(corpus["gap-4s.flac"][0])
    assert gap.longest_gap_s == pytest.approx(4.0, abs=0.2) and gap.head_silence_s == 0.0
    head = measure(corpus["head-silence-8s.flac"][0])
    assert head.head_silence_s == pytest.approx(8.0, abs=0.1) and head.longest_gap_s == 0.0
    assert measure(corpus["dc-offset.flac"][0]).dc_offset == pytest.approx(0.05, abs=0.002)
    assert measure(corpus["clean.flac"][0]).dual_mono is False
    assert measure(corpus["mp3-transcode.flac"][0]).spectral_cutoff_hz == pytest.approx(16500, abs=1500)
    assert measure(corpus["upsampled-96k.flac"][0]).spectral_cutoff_hz == pytest.approx(11025, abs=1500)  # its low-pass slope
    assert measure(corpus["clipped.flac"][0]).clipped_runs > 100 and measure(corpus["clean.flac"][0]).clipped_runs == 0


def test_few_clean_gtzan_clips_are_flagged(gtzan_dir):
    clips = sorted(gtzan_dir.glob("*/*.flac"))
    flagged = [clip.name for clip in clips if flags(measure(clip))]
    assert len(clips) == 60 and len(flagged) <= 3, flagged  # issue 26's bound: at most 5%


def test_every_threshold_can_be_overridden_and_a_wrong_one_is_named(corpus):
    from transforms.health import Thresholds

    gap = measure(corpus["gap-4s.flac"][0])
    assert flags(gap, Thresholds.parse("gap_s=5")) == [] and flags(gap, Thresholds.parse("gap-s=3.5")) == ["gap"]
    clipped = measure(corpus["clipped.flac"][0])
    assert flags(clipped, Thresholds.parse(f"clipped_runs={clipped.clipped_runs + 1}")) == []
    with pytest.raises(ValueError, match="no threshold 'gap'.*gap_s"):
        Thresholds.parse("gap=4")
    with pytest.raises(ValueError, match="expected a number"):
        Thresholds.parse("gap_s=long")


def test_true_peak_and_loudness_outliers_from_the_descriptors_loudness():
    from transforms.health import Thresholds, loudness_fences, true_peak_over
    from transforms.track_health import with_loudness_outlier_flag

    assert true_peak_over(-0.5) and not true_peak_over(-1.5) and not true_peak_over(None)
    assert not true_peak_over(-0.5, Thresholds.parse("true_peak_dbtp=0"))
    catalogue = [-14.0 + 0.1 * i for i in range(30)]  # a catalogue mastered near -14 to -11 LUFS
    low, high = loudness_fences(catalogue)
    assert low < -14.0 and high > -11.1 and loudness_fences(catalogue[:19]) is None  # too few to tell
    row = {"loudness_lufs": -30.0, "health_flags": ["gap"]}
    assert with_loudness_outlier_flag(row, (low, high))["health_flags"] == ["gap", "loudness outlier"]
    assert with_loudness_outlier_flag({**row, "loudness_lufs": -12.0}, (low, high)) == {**row, "loudness_lufs": -12.0}
    assert with_loudness_outlier_flag({**row, "health_flags": None}, (low, high))["health_flags"] is None  # health off


def test_tag_flags_true_peaks_and_the_runs_loudness_outliers(tmp_path, small_model):
    """22 generated tracks: 20 near one loudness, one 25 dB quieter, one whose samples stay below full scale but
    whose true peak (between the samples) is above it."""
    from pipelines import tag

    folder = tmp_path / "catalogue"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for i in range(20):
        noise = rng.normal(0, 0.1 * 10 ** (rng.uniform(-1, 1) / 20), (6 * RATE, 2))
        sf.write(folder / f"track-{i:02d}.flac", noise.astype(np.float32), RATE)
    sf.write(folder / "quiet.flac", (rng.normal(0, 0.1 * 10 ** (-25 / 20), (6 * RATE, 2))).astype(np.float32), RATE)
    # A quarter-rate sine sampled 45 degrees off its crests: samples at 0.88, peaks between them at 1.25 (+1.9 dBTP).
    t = np.arange(6 * RATE)
    over = 0.5 * rng.normal(0, 0.1, 6 * RATE) + 1.25 * np.sin(np.pi / 2 * t + np.pi / 4) * 0.7
    sf.write(folder / "hot.flac", np.stack([over, over * 0.9], axis=1).astype(np.float32), RATE, subtype="PCM_24")
    tag.run(["--input", str(folder), "--model", small_model[0], "--output", str(tmp_path / "tags"), "--progress", "off"])
    rows = {row["track_id"]: row for row in tag.read_tags(str(tmp_path / "tags")).to_pylist()}
    assert len(rows) == 22
    assert "loudness outlier" in rows["quiet.flac"]["health_flags"]
    assert rows["hot.flac"]["true_peak_dbtp"] > 0.0 and "true peak" in rows["hot.flac"]["health_flags"]
    assert not any("loudness outlier" in rows[f"track-{i:02d}.flac"]["health_flags"] for i in range(20))
    assert not any("true peak" in rows[f"track-{i:02d}.flac"]["health_flags"] for i in range(20))
    tag.run(["--input", str(folder), "--model", small_model[0], "--output", str(tmp_path / "lenient"), "--progress", "off",
             "--health-thresholds", "true_peak_dbtp=3,loudness_fence_iqr=100"])
    lenient = tag.read_tags(str(tmp_path / "lenient")).to_pylist()
    assert not any({"true peak", "loudness outlier"} & set(row["health_flags"]) for row in lenient)
