"""Copies of one recording found by their Chromaprint fingerprints: real GTZAN clips re-encoded, louder,
resampled, trimmed and padded (made with FFmpeg) against distinct clips of the same genre."""

from __future__ import annotations

import itertools
import shutil
import subprocess

import numpy as np
import pytest

from tests.conftest import require
from transforms import audio
from transforms.chromaprint import ITEM_S, fingerprint
from transforms.duplicates import align, candidate_keys, pairs_sharing_keys, recording_ids

RATE = 16000
# name -> FFmpeg arguments that make a copy of one recording as catalogues hold them.
VARIANTS = {
    "mp3-128k.mp3": ["-b:a", "128k"],
    "louder-6db-44k-stereo.wav": ["-af", "volume=6dB", "-ar", "44100", "-ac", "2"],
    "quieter-6db.ogg": ["-af", "volume=-6dB"],
    "trimmed-3s-head.flac": ["-ss", "3"],
    "trimmed-5s-tail.flac": ["-t", "25"],
    "padded-4s-silence.wav": ["-af", "adelay=4000"],
}


def fingerprint_of(path) -> np.ndarray:
    decoded = audio.decode(str(path), sample_rate_hz=RATE, max_duration_s=600)
    return fingerprint(decoded.samples, RATE)


@pytest.fixture(scope="module")
def recordings(tmp_path_factory, gtzan_dir) -> dict[str, dict[str, np.ndarray]]:
    """Three rock clips (distinct recordings of one genre: hard negatives for each other), each with its
    copies: recording -> {file name: fingerprint}."""
    ffmpeg = shutil.which("ffmpeg")
    assert ffmpeg, "ffmpeg is missing: `make test` installs it (system-deps)"
    folder = tmp_path_factory.mktemp("variants")
    found = {}
    for clip in ("rock.00000", "rock.00001", "rock.00002"):
        source = require(gtzan_dir / "rock" / f"{clip}.flac")
        found[clip] = {"original.flac": fingerprint_of(source)}
        for name, args in VARIANTS.items():
            target = folder / f"{clip}-{name}"
            subprocess.run([ffmpeg, "-loglevel", "error", "-y", "-i", str(source), *args, str(target)], check=True)
            found[clip][name] = fingerprint_of(target)
    return found


def test_a_fingerprint_is_one_word_per_eighth_of_a_second(recordings):
    words = recordings["rock.00000"]["original.flac"]
    assert words.dtype == np.uint32 and len(words) * ITEM_S == pytest.approx(30.0, abs=3.5)
    assert len(np.unique(words)) > 0.9 * len(words)  # music, not a steady tone


def test_every_copy_aligns_with_its_original_and_no_distinct_recording_does(recordings):
    for clip, copies in recordings.items():
        original = copies["original.flac"]
        for name, words in copies.items():
            found = align(original, words)
            assert found.is_copy(min(len(original), len(words)) * ITEM_S), (clip, name, found)
            assert found.bit_error < 0.15, (clip, name, found)
        if "trimmed-3s-head.flac" in copies:  # the trim shows as the offset: 3 s of words
            assert align(original, copies["trimmed-3s-head.flac"]).offset_words * ITEM_S == pytest.approx(3.0, abs=0.3)
    for a, b in itertools.combinations(recordings, 2):
        for name_a, name_b in itertools.product(recordings[a], recordings[b]):
            found = align(recordings[a][name_a], recordings[b][name_b])
            assert not found.is_copy(30.0), (a, name_a, b, name_b, found)


def test_keys_pairs_alignment_and_clusters_end_to_end(recordings):
    tracks = {f"{clip}/{name}": words for clip, copies in recordings.items() for name, words in copies.items()}
    by_key: dict[int, list[str]] = {}
    for track, words in tracks.items():
        for key in candidate_keys(words).tolist():
            by_key.setdefault(key, []).append(track)
    candidates = pairs_sharing_keys(list(by_key.items()))
    confirmed = [(a, b) for a, b in candidates
                 if align(tracks[a], tracks[b]).is_copy(min(len(tracks[a]), len(tracks[b])) * ITEM_S)]
    ids = recording_ids(tracks, confirmed)
    for clip in recordings:  # one id per recording, a different one for each recording
        assert len({ids[t] for t in tracks if t.startswith(clip)}) == 1
    assert len(set(ids.values())) == len(recordings)
    # Deterministic: the same clusters give the same ids whatever order the pairs and tracks come in.
    assert recording_ids(sorted(tracks, reverse=True), list(reversed(confirmed))) == ids
    assert all(value.startswith("rec-") and len(value) == 20 for value in ids.values())


def test_silence_and_very_short_audio_have_no_fingerprint_to_match():
    silent = fingerprint(np.zeros(RATE * 10, np.float32), RATE)
    short = fingerprint(np.random.default_rng(0).normal(0, 0.1, RATE // 2).astype(np.float32), RATE)
    assert len(short) == 0
    assert not align(silent, silent[:0]).is_copy(10.0) and align(short, short).overlap_s == 0.0


def test_tag_gives_copies_one_recording_id_and_names_the_preferred_copy(tmp_path, gtzan_dir, small_model):
    from pipelines import tag

    folder = tmp_path / "catalogue"
    folder.mkdir()
    original = require(gtzan_dir / "rock" / "rock.00000.flac")
    shutil.copy(original, folder / "a-master.flac")
    ffmpeg = shutil.which("ffmpeg")
    for name, args in (("b-compilation.mp3", ["-b:a", "128k"]), ("c-radio-edit.flac", ["-ss", "3", "-t", "24"])):
        subprocess.run([ffmpeg, "-loglevel", "error", "-y", "-i", str(original), *args, str(folder / name)], check=True)
    shutil.copy(require(gtzan_dir / "rock" / "rock.00001.flac"), folder / "d-other-song.flac")
    tag.run(["--input", str(folder), "--model", small_model[0], "--output", str(tmp_path / "tags"), "--progress", "off"])
    rows = {row["track_id"]: row for row in tag.read_tags(str(tmp_path / "tags")).to_pylist()}
    assert set(rows) == {"a-master.flac", "b-compilation.mp3", "c-radio-edit.flac", "d-other-song.flac"}
    copies = {rows[t]["recording_id"] for t in ("a-master.flac", "b-compilation.mp3", "c-radio-edit.flac")}
    assert len(copies) == 1 and rows["d-other-song.flac"]["recording_id"] not in copies
    # The preferred copy: lossless, no faults, then the smallest path: the master.
    assert rows["a-master.flac"]["duplicate_of"] is None and rows["d-other-song.flac"]["duplicate_of"] is None
    assert rows["b-compilation.mp3"]["duplicate_of"] == rows["c-radio-edit.flac"]["duplicate_of"] == "a-master.flac"
    # Deterministic: a track with no copy has the id of its own track id.
    from transforms.duplicates import own_recording_id
    assert rows["d-other-song.flac"]["recording_id"] == own_recording_id("d-other-song.flac")
