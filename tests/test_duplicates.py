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
from transforms.duplicates import align, candidate_pairs, recording_ids

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
    candidates = candidate_pairs(tracks)
    assert all(a.split("/")[0] == b.split("/")[0] for a, b in candidates)  # no pair across recordings here
    confirmed = [(a, b) for a, b in candidates
                 if align(tracks[a], tracks[b]).is_copy(min(len(tracks[a]), len(tracks[b])) * ITEM_S)]
    ids = recording_ids(tracks, confirmed)
    for clip in recordings:  # one id per recording, a different one for each recording
        assert len({ids[t] for t in tracks if t.startswith(clip)}) == 1
    assert len(set(ids.values())) == len(recordings)
    # Deterministic: the same clusters give the same ids whatever order the pairs and tracks come in.
    assert recording_ids(sorted(tracks, reverse=True), list(reversed(confirmed))) == ids
    assert all(value.startswith("rec-") and len(value) == 20 for value in ids.values())


def test_cluster_copies_in_beam_finds_the_same_clusters_and_leaves_no_spilled_file(recordings, tmp_path):
    """ClusterCopies (the index and the fingerprints spilled to files, shards joined back) against the
    pure functions on the same fingerprints, with a distinct track that shares no recording."""
    import apache_beam as beam
    from apache_beam.testing.util import assert_that, equal_to

    from transforms.duplicate_steps import ClusterCopies

    tracks = {f"{clip}/{name}": words for clip, copies in recordings.items() for name, words in copies.items()}
    tracks["lone"] = np.random.default_rng(3).integers(0, 2**32, 240, dtype=np.uint64).astype(np.uint32)
    expected = {track: recording for track, recording in recording_ids(tracks, [
        (a, b) for a, b in candidate_pairs(tracks)
        if align(tracks[a], tracks[b]).is_copy(min(len(tracks[a]), len(tracks[b])) * ITEM_S)]).items()
        if track != "lone"}
    assert len(set(expected.values())) == len(recordings)
    spill_root = tmp_path / "spill"
    with beam.Pipeline("DirectRunner") as pipeline:
        clusters = (pipeline | beam.Create(sorted(tracks.items())) | ClusterCopies(str(spill_root)))
        assert_that(clusters, equal_to([expected]))
    assert not any(spill_root.rglob("*")), "the spilled index and fingerprints outlived the job"


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
    assert not list((tmp_path / "tags").glob(".temp-*")), "the clustering's spilled files outlived the job"


def test_featurize_keeps_every_copy_of_a_recording_in_one_split(tmp_path, gtzan_dir):
    """Copies credited to different artists (a compilation, a radio edit) would split apart by artist;
    featurize finds them by their fingerprints and gives them one split, and says how many moved."""
    import csv
    import json

    from pipelines import featurize
    from schemas import examples
    from tests.test_featurize_pipeline import read_split
    from transforms.splits import split_of

    proportions = (0.34, 0.33, 0.33)
    # Artists whose own splits differ, so that keeping the copies together must move some of them.
    artists = ["Artist 0"]
    for i in range(1, 100):
        if len(artists) == 3:
            break
        name = f"Artist {i}"
        if split_of(f"artist:{name}", proportions=proportions) not in {
                split_of(f"artist:{a}", proportions=proportions) for a in artists}:
            artists.append(name)
    folder = tmp_path / "catalogue"
    folder.mkdir()
    ffmpeg = shutil.which("ffmpeg")
    original = require(gtzan_dir / "rock" / "rock.00000.flac")
    shutil.copy(original, folder / "master.flac")
    for name, args in (("compilation.mp3", ["-b:a", "128k"]), ("radio-edit.flac", ["-ss", "3", "-t", "24"])):
        subprocess.run([ffmpeg, "-loglevel", "error", "-y", "-i", str(original), *args, str(folder / name)], check=True)
    for clip in ("rock.00001", "rock.00002"):  # same genre, no copies: they keep their artists' splits
        shutil.copy(require(gtzan_dir / "rock" / f"{clip}.flac"), folder / f"{clip}.flac")
    rows = [("master", "master.flac", artists[0]), ("compilation", "compilation.mp3", artists[1]),
            ("radio-edit", "radio-edit.flac", artists[2]), ("other-1", "rock.00001.flac", artists[1]),
            ("other-2", "rock.00002.flac", artists[2])]
    with open(folder / "manifest.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["track_id", "path", "genre", "artist"])
        writer.writerows((track, path, "rock", artist) for track, path, artist in rows)

    def splits_of(output):
        found = {}
        for split in examples.SPLITS:
            for example in read_split(output, split):
                found.setdefault(example["track_id"], set()).add(split)
        return found

    argv = ["--input", str(folder / "manifest.csv"), "--splits", "34,33,33", "--progress", "off"]
    featurize.run([*argv, "--output", str(tmp_path / "grouped")])
    grouped = splits_of(tmp_path / "grouped")
    assert all(len(found) == 1 for found in grouped.values())
    assert len(grouped["master"] | grouped["compilation"] | grouped["radio-edit"]) == 1
    own = {track: split_of(f"artist:{artist}", proportions=proportions) for track, _, artist in rows}
    assert grouped["other-1"] == {own["other-1"]} and grouped["other-2"] == {own["other-2"]}
    metadata = json.loads((tmp_path / "grouped" / "metadata.json").read_text())
    moved = sorted(track for track in ("master", "compilation", "radio-edit") if grouped[track] != {own[track]})
    assert metadata["copies"] == {"tracks_with_copies": 3, "tracks_moved": 2, "moved": moved}
    assert metadata["split_key"] == "recording, then artist"
    assert not list((tmp_path / "grouped").glob(".temp-*")), "temporary files outlived the job"

    featurize.run([*argv, "--output", str(tmp_path / "by-artist"), "--group-copies", "off"])
    by_artist = splits_of(tmp_path / "by-artist")
    assert {track: found.pop() for track, found in by_artist.items()} == own  # the copies straddle splits
    assert "copies" not in json.loads((tmp_path / "by-artist" / "metadata.json").read_text())



def test_skip_existing_reuses_the_tags_of_a_copy_already_tagged(tmp_path, gtzan_dir, small_model):
    """A second run over a grown folder: a louder MP3 of a held track and the same bytes under a new name take
    the held tags (no model run), with their own loudness; a new recording is tagged by the model."""
    import json

    from pipelines import tag

    folder = tmp_path / "catalogue"
    folder.mkdir()
    master = require(gtzan_dir / "rock" / "rock.00000.flac")
    shutil.copy(master, folder / "a-master.flac")
    shutil.copy(require(gtzan_dir / "jazz" / "jazz.00001.flac"), folder / "b-jazz.flac")
    argv = ["--input", str(folder), "--model", small_model[0], "--output", str(tmp_path / "tags"), "--progress", "off"]
    tag.run(argv)
    ffmpeg = shutil.which("ffmpeg")
    subprocess.run([ffmpeg, "-loglevel", "error", "-y", "-i", str(master), "-af", "volume=6dB", "-b:a", "192k",
                    str(folder / "c-remaster.mp3")], check=True)
    shutil.copy(folder / "b-jazz.flac", folder / "d-same-bytes.flac")
    shutil.copy(require(gtzan_dir / "rock" / "rock.00001.flac"), folder / "e-new-song.flac")

    with pytest.raises(ValueError, match="--skip-existing"):
        tag.run([*argv, "--reuse-duplicates"])
    second = tag.run([*argv, "--skip-existing", "--reuse-duplicates"])
    assert (second.inputs, second.skipped, second.tagged, second.reused) == (5, 2, 3, 2)
    rows = {row["track_id"]: row for row in tag.read_tags(str(tmp_path / "tags")).to_pylist()}
    assert len(rows) == 5
    held, remaster, twin = rows["a-master.flac"], rows["c-remaster.mp3"], rows["d-same-bytes.flac"]
    assert remaster["reused_from"] == "a-master.flac" and twin["reused_from"] == "b-jazz.flac"
    assert rows["e-new-song.flac"]["reused_from"] is None and held["reused_from"] is None
    for copy, original in ((remaster, held), (twin, rows["b-jazz.flac"])):
        assert copy["genre"] == original["genre"] and copy["embedding"] == original["embedding"]
        assert copy["recording_id"] == original["recording_id"] and copy["duplicate_of"] == original["track_id"]
        assert copy["tagged_at"] > original["tagged_at"]
    # Its own file: its own identity, fingerprint and loudness (6 dB up, a little less where it clips).
    assert remaster["uri"].endswith("c-remaster.mp3") and remaster["fingerprint"] != held["fingerprint"]
    assert 4.0 < remaster["loudness_lufs"] - held["loudness_lufs"] < 6.5
    assert twin["fingerprint"] == rows["b-jazz.flac"]["fingerprint"]
    records = [json.loads(path.read_text()) for path in (tmp_path / "tags" / "_runs").glob("*.json")]
    assert sorted(record["reused"] for record in records) == [0, 2]


def test_skip_existing_links_a_new_copy_to_the_recording_an_earlier_run_found(tmp_path, gtzan_dir, small_model):
    """A second run over a grown folder, tags not reused: the new MP3 of a held master joins the held
    recording (duplicate_of the held preferred copy), two new copies of a new song share an id of their own,
    and a new song stays alone; with --link-duplicates off the MP3 keeps an id of this run."""
    from pipelines import tag
    from transforms.duplicates import own_recording_id

    folder = tmp_path / "catalogue"
    folder.mkdir()
    ffmpeg = shutil.which("ffmpeg")

    def encode(source, target, *args):
        subprocess.run([ffmpeg, "-loglevel", "error", "-y", "-i", str(source), *args, str(folder / target)], check=True)

    master = require(gtzan_dir / "rock" / "rock.00000.flac")
    shutil.copy(master, folder / "a-master.flac")
    encode(master, "c-radio-edit.flac", "-ss", "3", "-t", "24")
    argv = ["--input", str(folder), "--model", small_model[0], "--progress", "off"]
    tag.run([*argv, "--output", str(tmp_path / "tags")])
    held = {row["track_id"]: row for row in tag.read_tags(str(tmp_path / "tags")).to_pylist()}
    recording = held["a-master.flac"]["recording_id"]
    assert held["c-radio-edit.flac"]["recording_id"] == recording
    shutil.copytree(tmp_path / "tags", tmp_path / "tags-unlinked")

    encode(master, "b-compilation.mp3", "-b:a", "128k")
    other = require(gtzan_dir / "rock" / "rock.00002.flac")
    shutil.copy(other, folder / "f-other.flac")
    encode(other, "g-other.ogg", "-af", "volume=-6dB")
    shutil.copy(require(gtzan_dir / "rock" / "rock.00001.flac"), folder / "e-new-song.flac")
    second = tag.run([*argv, "--output", str(tmp_path / "tags"), "--skip-existing"])
    assert (second.inputs, second.skipped, second.tagged, second.reused) == (6, 2, 4, 0)
    rows = {row["track_id"]: row for row in tag.read_tags(str(tmp_path / "tags")).to_pylist()}
    assert rows["b-compilation.mp3"]["recording_id"] == recording
    assert rows["b-compilation.mp3"]["duplicate_of"] == "a-master.flac"
    assert rows["f-other.flac"]["recording_id"] == rows["g-other.ogg"]["recording_id"] != recording
    assert rows["g-other.ogg"]["duplicate_of"] == "f-other.flac" and rows["f-other.flac"]["duplicate_of"] is None
    assert rows["e-new-song.flac"]["recording_id"] == own_recording_id("e-new-song.flac")
    assert not list((tmp_path / "tags").glob(".temp-*")), "the clustering's spilled files outlived the job"

    tag.run([*argv, "--output", str(tmp_path / "tags-unlinked"), "--skip-existing", "--link-duplicates", "off"])
    unlinked = {row["track_id"]: row for row in tag.read_tags(str(tmp_path / "tags-unlinked")).to_pylist()}
    assert unlinked["b-compilation.mp3"]["recording_id"] == own_recording_id("b-compilation.mp3") != recording


def test_shared_key_counts_of_a_batch_match_index_keys_one_fingerprint_at_a_time():
    from transforms.duplicates import index_keys, shared_key_counts

    rng = np.random.default_rng(8)
    prints = [rng.integers(0, 3000, n).astype(np.uint32) for n in (240, 0, 13, 970, 240)]
    prints[4][:100] = prints[0][:100]  # a copy's words, repeated words within one fingerprint
    known = np.unique(np.concatenate([index_keys(prints[0]), rng.integers(0, 3000, 50).astype(np.uint32)]))
    counts = shared_key_counts(np.concatenate(prints), np.array([len(p) for p in prints]), known)
    assert counts.tolist() == [len(set(index_keys(p).tolist()) & set(known.tolist())) for p in prints]
    assert counts[0] == len(index_keys(prints[0])) > 0
    assert shared_key_counts(np.concatenate(prints), np.array([len(p) for p in prints]), known[:0]).tolist() == [0] * 5


def test_a_watch_window_links_its_copies_within_it_and_to_the_held_recordings(recordings, tmp_path):
    """link_window (the watch's sink): real fingerprints of three rock clips and their copies. Held in OUT:
    rock.00000's original (a batch row with its recording id) and its MP3 (a watch row: no id yet)."""
    import datetime

    import pyarrow as pa
    import pyarrow.parquet as pq

    from transforms.duplicates import own_recording_id
    from transforms.link_copies import HeldRecordings, link_window

    def row(clip, name, **more):
        return {"track_id": f"{clip}/{name}", "uri": f"/music/{clip}/{name}", "health_flags": [],
                "fingerprint": recordings[clip][name].tolist(), **more}

    at = datetime.datetime(2026, 12, 1, tzinfo=datetime.UTC)
    output = tmp_path / "tags"
    output.mkdir()
    pq.write_table(pa.Table.from_pylist([row("rock.00000", "original.flac", recording_id="rec-held", duplicate_of=None,
                                             tagged_at=at)]), output / "tags-run1-00000-of-00001.parquet")
    pq.write_table(pa.Table.from_pylist([row("rock.00000", "mp3-128k.mp3", recording_id=None, duplicate_of=None,
                                             tagged_at=at)]), output / "tags-watch-s1-0001.parquet")
    held = HeldRecordings(str(output))
    window = [row("rock.00000", "quieter-6db.ogg"), row("rock.00000", "trimmed-3s-head.flac"),
              row("rock.00001", "original.flac"), row("rock.00001", "mp3-128k.mp3"), row("rock.00002", "original.flac"),
              {"track_id": "no-fingerprint.wav", "uri": "/music/no-fingerprint.wav", "fingerprint": None}]
    linked = {r["track_id"]: r for r in link_window(window, held)}
    # Copies of a held recording take its id, and duplicate_of its preferred copy: the held row that is in a
    # recording comes before the smaller track id of a row without one.
    for name in ("quieter-6db.ogg", "trimmed-3s-head.flac"):
        assert linked[f"rock.00000/{name}"]["recording_id"] == "rec-held"
        assert linked[f"rock.00000/{name}"]["duplicate_of"] == "rock.00000/original.flac"
    # New copies of each other: one id, the lossless one preferred; alone: its own id.
    new_pair = linked["rock.00001/original.flac"], linked["rock.00001/mp3-128k.mp3"]
    assert new_pair[0]["recording_id"] == new_pair[1]["recording_id"] != "rec-held"
    assert new_pair[0]["duplicate_of"] is None and new_pair[1]["duplicate_of"] == "rock.00001/original.flac"
    assert linked["rock.00002/original.flac"]["recording_id"] == own_recording_id("rock.00002/original.flac")
    assert linked["no-fingerprint.wav"]["recording_id"] == own_recording_id("no-fingerprint.wav")
    # Within the window alone (--link-duplicates off): the rock.00000 copies are one recording of their own.
    alone = {r["track_id"]: r for r in link_window(window, None)}
    assert alone["rock.00000/quieter-6db.ogg"]["recording_id"] == alone["rock.00000/trimmed-3s-head.flac"]["recording_id"]
    assert alone["rock.00000/quieter-6db.ogg"]["recording_id"] != "rec-held"
    # A held file replaced (another size) is read again: its index is kept per (path, size).
    pq.write_table(pa.Table.from_pylist([row("rock.00002", "original.flac", recording_id="rec-other", duplicate_of=None,
                                             tagged_at=at)]), output / "tags-watch-s1-0001.parquet")
    again = {r["track_id"]: r for r in link_window(window, held)}
    assert again["rock.00002/original.flac"]["recording_id"] == "rec-other"


def test_the_vectorized_index_finds_the_pairs_a_plain_loop_finds():
    """pairs_in_block + count_pairs against a dictionary of key -> tracks, on keys crowded on purpose (a key
    held by more tracks than MAX_TRACKS_PER_KEY gives no pair) and a track listed twice."""
    from transforms.duplicates import MAX_TRACKS_PER_KEY, MIN_SHARED_KEYS, count_pairs, pairs_in_block

    rng = np.random.default_rng(5)
    keys = rng.integers(0, 400, 6000).astype(np.uint32)
    tracks = rng.integers(1, 300, 6000).astype(np.uint64)
    keys[:MAX_TRACKS_PER_KEY + 1] = 999  # one crowded key
    tracks[:MAX_TRACKS_PER_KEY + 1] = np.arange(1, MAX_TRACKS_PER_KEY + 2)
    by_key: dict[int, set[int]] = {}
    for key, track in zip(keys.tolist(), tracks.tolist(), strict=True):
        by_key.setdefault(key, set()).add(track)
    shared: dict[tuple[int, int], int] = {}
    for members in by_key.values():
        if len(members) <= MAX_TRACKS_PER_KEY:
            for a, b in itertools.combinations(sorted(members), 2):
                shared[(a, b)] = shared.get((a, b), 0) + 1
    expected = sorted(pair for pair, n in shared.items() if n >= MIN_SHARED_KEYS)
    # The same (key, track) twice counts once, as a track's keys are distinct.
    entries = np.unique(np.stack([keys.astype(np.uint64), tracks], axis=1), axis=0)
    assert expected and count_pairs(*pairs_in_block(entries[:, 0].astype(np.uint32), entries[:, 1])) == expected
