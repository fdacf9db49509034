"""transforms/catalogue.py: directories, globs and manifests into entries; splits."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from tests.conftest import tone
from transforms.catalogue import CatalogueError, list_catalogue
from transforms.splits import copies_key, parse_proportions, split_key, split_of


@pytest.fixture
def tree(tmp_path):
    for relative in ("rock/a.flac", "rock/b.ogg", "jazz/c.wav", "jazz/deep/d.flac", "loose.flac"):
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, tone(440, 0.5, sr=8000), 8000)
    (tmp_path / "rock" / "cover.jpg").write_bytes(b"\xff\xd8")
    (tmp_path / "README.txt").write_text("liner notes")
    return tmp_path


def test_directory_is_scanned_recursively_and_non_audio_is_reported(tree):
    catalogue = list_catalogue(str(tree))
    assert sorted(e.track_id for e in catalogue.entries) == [
        "jazz/c.wav", "jazz/deep/d.flac", "loose.flac", "rock/a.flac", "rock/b.ogg"]
    assert [p.rsplit("/", 1)[-1] for p in catalogue.skipped_files] == ["README.txt", "cover.jpg"]
    assert all(e.label is None for e in catalogue.entries)


def test_labels_from_dirs_use_the_parent_folder_and_leave_root_files_unlabelled(tree):
    catalogue = list_catalogue(str(tree), labels="from-dirs")
    labels = {e.track_id: e.label for e in catalogue.entries}
    assert labels == {"jazz/c.wav": "jazz", "jazz/deep/d.flac": "deep", "loose.flac": None,
                      "rock/a.flac": "rock", "rock/b.ogg": "rock"}
    assert catalogue.labels == ["deep", "jazz", "rock"]


def test_a_glob_takes_every_match_as_an_input(tree):
    catalogue = list_catalogue(str(tree / "rock" / "*"))
    assert sorted(e.track_id for e in catalogue.entries) == ["a.flac", "b.ogg", "cover.jpg"]


def test_csv_manifest_resolves_relative_paths_and_reads_genre(gtzan_dir):
    catalogue = list_catalogue(str(gtzan_dir / "manifest.csv"))
    assert len(catalogue.entries) == 60 and not catalogue.rejected
    first = catalogue.entries[0]
    assert first.track_id == "blues.00000" and first.label == "blues"
    assert first.uri == str(gtzan_dir / "blues" / "blues.00000.flac") and os.path.exists(first.uri)
    assert len(catalogue.labels) == 10


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_jsonl_and_parquet_manifests(tree, fmt):
    rows = [{"path": "rock/a.flac", "track_id": "t1", "label": "rock", "artist": "A"},
            {"uri": str(tree / "jazz" / "c.wav"), "track_id": "t2", "label": "jazz", "artist": "B"}]
    rows = [{"uri": r.get("uri"), "path": r.get("path"), **{k: r[k] for k in ("track_id", "label", "artist")}} for r in rows]
    manifest = tree / f"m.{fmt}"
    if fmt == "jsonl":
        manifest.write_text("\n".join(json.dumps(r) for r in rows))
    else:
        pq.write_table(pa.Table.from_pylist(rows), manifest)
    catalogue = list_catalogue(str(manifest))
    assert [(e.track_id, e.label, e.artist) for e in catalogue.entries] == [("t1", "rock", "A"), ("t2", "jazz", "B")]
    assert catalogue.entries[0].uri == str(tree / "rock" / "a.flac")


def test_duplicate_ids_and_empty_paths_are_rejected_not_dropped(tree):
    manifest = tree / "m.csv"
    manifest.write_text("path,track_id\nrock/a.flac,x\nrock/b.ogg,x\n,y\nmissing.flac,z\n")
    catalogue = list_catalogue(str(manifest))
    assert [e.track_id for e in catalogue.entries] == ["x", "z"]  # a missing file fails later, at read
    reasons = {r.track_id: r.reason for r in catalogue.rejected}
    assert "duplicate track_id 'x'" in reasons["x"] and "empty path" in reasons["y"]


@pytest.mark.parametrize(
    "make_source, fragment",
    [(lambda p: p / "nowhere", "no such file or directory"),
     (lambda p: p / "nothing-*.flac", "matches no file"),
     (lambda p: p / "empty-dir", "holds no files")],
)
def test_unusable_inputs_are_clear_errors(tmp_path, make_source, fragment):
    (tmp_path / "empty-dir").mkdir()
    with pytest.raises(CatalogueError, match=fragment):
        list_catalogue(str(make_source(tmp_path)))


def test_manifest_without_a_path_column_is_a_clear_error(tmp_path):
    (tmp_path / "m.csv").write_text("file,genre\na.wav,rock\n")
    with pytest.raises(CatalogueError, match="needs a 'uri' or 'path' column"):
        list_catalogue(str(tmp_path / "m.csv"))


def test_split_is_a_pure_function_of_the_key():
    assert split_of("track:blues.00000") == split_of("track:blues.00000")
    # Golden values: a change here would move tracks between splits of existing data sets.
    assert [split_of(f"track:t{i}") for i in range(8)] == [
        "train", "train", "validation", "train", "train", "train", "train", "train"]
    assert split_of("track:t2", proportions=(1.0, 0.0, 0.0)) == "train"
    counts = {s: 0 for s in ("train", "validation", "test")}
    for i in range(20000):
        counts[split_of(f"track:{i}", proportions=(0.7, 0.2, 0.1))] += 1
    assert counts["train"] / 20000 == pytest.approx(0.7, abs=0.02)
    assert counts["validation"] / 20000 == pytest.approx(0.2, abs=0.02)


def test_split_is_the_same_in_another_process_with_another_hash_seed():
    keys = [split_key(track_id=f"t{i}", artist=None) for i in range(50)]
    here = [split_of(k) for k in keys]
    code = "import json,sys; from transforms.splits import split_of; print(json.dumps([split_of(k) for k in json.loads(sys.argv[1])]))"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    there = subprocess.run([sys.executable, "-c", code, json.dumps(keys)], capture_output=True, text=True,
                           check=True, env=env).stdout
    assert json.loads(there) == here


def test_artist_keys_keep_an_artist_in_one_split():
    assert split_key(track_id="a", artist="Miles") == split_key(track_id="b", artist="Miles") == "artist:Miles"
    assert split_key(track_id="a", artist=None) == "track:a"
    # Copies of one recording share their key, which outranks the artist; it follows the first artist.
    assert split_key(track_id="a", artist="Miles", copies="artist:Bill") == "artist:Bill"
    assert copies_key("rec-1", ["Miles", None, "Bill"]) == "artist:Bill"
    assert copies_key("rec-1", [None, None]) == "recording:rec-1"


def test_parse_proportions():
    assert parse_proportions("80,10,10") == pytest.approx((0.8, 0.1, 0.1))
    assert parse_proportions("0.6/0.2/0.2") == pytest.approx((0.6, 0.2, 0.2))
    with pytest.raises(ValueError, match="three"):
        parse_proportions("80,20")


def _check_listed_in_pipeline(source: str, labels: str, entries: list, rejected: list) -> None:
    """ListCatalogue on the DirectRunner gives exactly these entries and rejections."""
    import apache_beam as beam
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to

    from transforms.listing import ListCatalogue, plan_listing

    with TestPipeline() as pipeline:
        listed = pipeline | ListCatalogue(plan_listing(source, labels=labels), labels=labels)
        assert_that(listed["entries"], equal_to(entries), label="Entries")
        assert_that(listed["rejected"] | beam.Map(lambda r: (r.uri, r.track_id, r.error)), equal_to(rejected),
                    label="Rejected")


def _listed_in_launcher(source: str, labels: str = "auto") -> tuple[list, list]:
    catalogue = list_catalogue(source, labels=labels)
    return (sorted(catalogue.entries, key=lambda e: e.track_id),
            sorted(((r.uri, r.track_id, r.reason) for r in catalogue.rejected), key=str))


@pytest.mark.parametrize("kind", ["folder", "from-dirs", "glob", "csv", "tsv", "jsonl", "parquet", "gtzan"])
def test_listing_in_the_workers_gives_what_listing_in_the_launcher_gives(tree, gtzan_dir, kind):
    rows = [{"path": "rock/a.flac", "track_id": "x", "genre": "rock", "artist": "A"},
            {"path": "rock/b.ogg", "track_id": "x", "genre": "rock", "artist": "A"},  # duplicate id
            {"path": "", "track_id": "y", "genre": "jazz", "artist": "B"},  # empty path
            {"path": str(tree / "jazz" / "c.wav"), "track_id": "z", "genre": "jazz", "artist": "B"},
            {"path": "gone.flac", "track_id": "w", "genre": "", "artist": ""}]  # fails later, at read
    source, labels = {"folder": (str(tree), "auto"), "from-dirs": (str(tree), "from-dirs"),
                      "glob": (str(tree / "*" / "*.flac"), "auto"), "gtzan": (str(gtzan_dir / "manifest.csv"), "auto")
                      }.get(kind, (str(tree / f"m.{kind}"), "manifest"))
    if kind in ("csv", "tsv"):
        sep = "," if kind == "csv" else "\t"
        (tree / f"m.{kind}").write_text("\ufeff" + "\n".join(sep.join(r.values()) for r in [dict(zip(rows[0], rows[0])), *rows]) + "\n")
    elif kind == "jsonl":
        (tree / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    elif kind == "parquet":
        pq.write_table(pa.Table.from_pylist(rows), tree / "m.parquet")
    entries, rejected = _listed_in_launcher(source, labels)
    assert entries, "nothing listed"
    _check_listed_in_pipeline(source, labels, entries, rejected)
    if kind in ("csv", "tsv", "jsonl", "parquet"):
        assert [e.track_id for e in entries] == ["w", "x", "z"]
        assert entries[1].uri == str(tree / "rock" / "a.flac")  # the smallest path of the duplicates
        assert sorted(r[1] for r in rejected) == ["x", "y"]


@pytest.mark.parametrize(
    "make_source, fragment",
    [(lambda p: p / "nowhere", "no such file or directory"),
     (lambda p: p / "nothing-*.flac", "matches no file"),
     (lambda p: p / "empty-dir", "holds no files"),
     (lambda p: p / "no-audio", "none of its 2 files has an audio extension"),
     (lambda p: p / "m.csv", "needs a 'uri' or 'path' column")],
)
def test_the_launcher_check_before_listing_in_the_workers_gives_the_same_errors(tmp_path, make_source, fragment):
    from transforms.listing import plan_listing

    (tmp_path / "empty-dir").mkdir()
    (tmp_path / "no-audio").mkdir()
    (tmp_path / "no-audio" / "a.txt").write_text("a")
    (tmp_path / "no-audio" / "b.jpg").write_text("b")
    (tmp_path / "m.csv").write_text("file,genre\na.wav,rock\n")
    with pytest.raises(CatalogueError, match=fragment):
        plan_listing(str(make_source(tmp_path)))


def test_a_parquet_manifest_gives_its_row_count_to_the_launcher_from_its_footer(tmp_path):
    from transforms.listing import plan_listing

    pq.write_table(pa.Table.from_pylist([{"uri": f"/m/{i}.flac"} for i in range(1234)]), tmp_path / "m.parquet")
    assert plan_listing(str(tmp_path / "m.parquet")).total == 1234
