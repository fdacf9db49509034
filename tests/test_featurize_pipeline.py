"""pipelines/featurize.py end to end: real GTZAN audio, generated bad files, real Beam runners."""

from __future__ import annotations

import csv
import glob
import json
import pathlib
import shutil

import apache_beam as beam
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import tensorflow as tf
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to
from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2

from pipelines import featurize
from schemas import examples
from schemas.failure import ERRORS_DIR
from schemas.features import MUSICNN, FeatureConfig, SegmentPolicy
from schemas.featurize_metadata import METADATA_FILE
from tests.conftest import make_bad_files, make_good_files, tone
from transforms.listing import catalogue_facts, plan_listing

GENRES_USED = ("blues", "classical", "jazz", "metal", "reggae")


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory, gtzan_rows, gtzan_dir) -> tuple[pathlib.Path, dict[str, str]]:
    """A manifest of 15 real GTZAN clips, odd-but-valid files, bad files, a missing path and a
    duplicate id. Returns the manifest and the expected fate of each track id: a split-agnostic
    'ok' or the failing stage."""
    folder = tmp_path_factory.mktemp("catalogue")
    rows, fate = [], {}
    for row in gtzan_rows:
        if row["genre"] in GENRES_USED and int(row["track_id"].split(".")[1]) < 3:
            rows.append({"path": str(gtzan_dir / row["path"]), "track_id": row["track_id"], "genre": row["genre"]})
            fate[row["track_id"]] = "ok"
    for name in make_good_files(folder / "odd"):
        rows.append({"path": f"odd/{name}", "track_id": f"odd/{name}", "genre": "odd"})
        fate[f"odd/{name}"] = "ok"
    for name, stage in make_bad_files(folder / "bad").items():
        rows.append({"path": f"bad/{name}", "track_id": f"bad/{name}", "genre": "bad"})
        fate[f"bad/{name}"] = stage
    rows.append({"path": "bad/does-not-exist.flac", "track_id": "missing", "genre": "bad"})
    fate["missing"] = "read"
    rows.append({"path": rows[0]["path"], "track_id": rows[0]["track_id"], "genre": "dup"})  # duplicate id
    manifest = folder / "manifest.csv"
    with open(manifest, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "track_id", "genre"])
        writer.writeheader()
        writer.writerows(rows)
    return manifest, fate


def read_records(output: pathlib.Path, split: str) -> list[bytes]:
    """A split's serialized examples, shard by shard."""
    files = sorted(glob.glob(str(output / split / f"part-*{examples.TFRECORD_SUFFIX}")))
    return [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]


def read_split(output: pathlib.Path, split: str) -> list[dict]:
    return [examples.decode_example(record) for record in read_records(output, split)]


def read_errors(output: pathlib.Path) -> list[dict]:
    return pq.read_table(str(output / ERRORS_DIR)).to_pylist()


@pytest.fixture(scope="module")
def featurized(catalogue, tmp_path_factory) -> tuple[pathlib.Path, dict]:
    manifest, _ = catalogue
    output = tmp_path_factory.mktemp("features")
    result = featurize.run(["--input", str(manifest), "--output", str(output), "--max-segments", "6"])
    return output, result


def test_every_input_ends_in_the_shards_or_in_errors(catalogue, featurized):
    _, fate = catalogue
    output, result = featurized
    in_shards = {e["track_id"] for split in examples.SPLITS for e in read_split(output, split)}
    errors = read_errors(output)
    failed = {row["track_id"]: row["stage"] for row in errors}
    assert in_shards.isdisjoint(set(failed) - {"blues.00000"})
    assert in_shards == {t for t, f in fate.items() if f == "ok"}
    # The duplicate row of blues.00000 is refused at listing; the first one is featurized.
    assert failed.pop("blues.00000") == "catalogue"
    assert failed == {t: f for t, f in fate.items() if f != "ok"}
    assert all(row["error"] and row["uri"] for row in errors)
    assert result.inputs == len(fate) + 1
    assert result.totals["failed"] == len(errors)


def test_no_track_straddles_two_splits(featurized):
    output, _ = featurized
    seen: dict[str, str] = {}
    for split in examples.SPLITS:
        for example in read_split(output, split):
            assert seen.setdefault(example["track_id"], split) == split


def test_metadata_counts_agree_with_the_shards(featurized):
    output, _ = featurized
    metadata = json.loads((output / METADATA_FILE).read_text())
    cfg = FeatureConfig.from_dict(metadata["feature_config"])
    assert metadata["feature_version"] == cfg.version == MUSICNN.version  # the default: what the default model needs
    # The vocabulary is every label the manifest names (streamed by the launcher, which keeps no rows):
    # the bad files' label, whose inputs all fail, and the rejected duplicate's too.
    assert metadata["labels"] == sorted({*GENRES_USED, "odd", "bad", "dup"})
    for split in examples.SPLITS:
        written = read_split(output, split)
        assert sum(c["segments"] for c in metadata["counts"][split].values()) == len(written)
        for example in written:
            assert metadata["labels"][example["label_id"]] == example["label"]
            assert example["mel"].shape == cfg.mel_shape
    train_segments = sum(c["segments"] for c in metadata["counts"]["train"].values())
    assert metadata["mel_stats"]["frames"] == train_segments * cfg.n_frames
    assert len(metadata["mel_stats"]["mean"]) == cfg.n_mels
    assert metadata["segment_policy"]["max_segments"] == 6
    assert max(c["segments"] for s in metadata["counts"].values() for c in s.values()) <= 6 * 3  # 3 tracks a genre
    assert metadata["failed"]["count"] == len(read_errors(output))


def test_schema_file_parses_and_matches_what_tf_data_reads(featurized):
    output, _ = featurized
    schema = text_format.Parse((output / examples.SCHEMA_FILE).read_text(), schema_pb2.Schema())
    cfg = MUSICNN  # featurize's default
    spec = examples.feature_spec(cfg)
    assert {f.name for f in schema.feature} == set(spec)
    files = glob.glob(str(output / "train" / "*.tfrecord.gz"))
    batch = next(iter(tf.data.TFRecordDataset(files, compression_type="GZIP").batch(4).map(
        lambda records: tf.io.parse_example(records, spec))))
    assert examples.decode_mel(batch[examples.MEL], cfg).shape == (4, *cfg.mel_shape)


def test_a_second_run_refuses_to_mix_with_existing_outputs(catalogue, featurized):
    manifest, _ = catalogue
    output, _ = featurized
    with pytest.raises(ValueError, match="--overwrite"):
        featurize.run(["--input", str(manifest), "--output", str(output)])


def test_splits_and_examples_are_identical_across_runs_and_runners(catalogue, featurized, tmp_path):
    manifest, _ = catalogue
    first, _ = featurized
    second = tmp_path / "again"
    featurize.run(["--input", str(manifest), "--output", str(second), "--max-segments", "6",
                   "--direct_num_workers", "2", "--direct_running_mode", "multi_processing"])
    for split in examples.SPLITS:
        key = lambda e: (e["track_id"], e["segment_index"])  # noqa: E731
        a = sorted(read_split(first, split), key=key)
        b = sorted(read_split(second, split), key=key)
        assert [key(e) for e in a] == [key(e) for e in b], split
        assert all((x["mel"] == y["mel"]).all() for x, y in zip(a, b, strict=True))


def _failure_fields(failure):
    return (pathlib.Path(failure.uri).name, failure.stage)


def test_test_pipeline_outputs_with_assert_that(tmp_path):
    bad = make_bad_files(tmp_path / "bad")
    make_good_files(tmp_path / "good")
    plan = plan_listing(str(tmp_path))
    with BeamTestPipeline() as pipeline:
        outputs = featurize.build(
            pipeline, plan, catalogue_facts(plan, labels="auto"), labels="auto", output=str(tmp_path / "out"),
            cfg=FeatureConfig(), policy=SegmentPolicy(), proportions=(0.8, 0.1, 0.1),
        )
        failures = outputs["failures"] | "FailureFields" >> beam.Map(_failure_fields)
        assert_that(failures, equal_to(list(bad.items())), label="CheckFailures")
        segment_tracks = outputs["tracks"] | "TrackIds" >> beam.Map(lambda t: t.entry.track_id.split("/")[0])
        assert_that(segment_tracks, equal_to(["good"] * 10), label="CheckTracks")


def test_real_unlabelled_catalogue_of_music_and_non_music(catalogue_sample_dir, tmp_path):
    result = featurize.run(["--input", str(catalogue_sample_dir), "--output", str(tmp_path / "f")])
    assert result.inputs == 18 and result.totals["failed"] == 0
    assert result.skipped_non_audio_files == 1  # SOURCES.csv
    assert result.labels == []
    assert all(e["label_id"] == examples.UNLABELLED_ID for e in read_split(tmp_path / "f", "train"))


def test_feature_config_file_changes_shapes_and_version(tmp_path):
    for i in range(3):
        sf.write(tmp_path / f"t{i}.wav", tone(300 + 100 * i, 5.0, sr=16000), 16000)
    cfg = FeatureConfig(sample_rate_hz=16000, n_fft=512, hop_length=256, n_mels=64, fmax_hz=8000.0, segment_s=2.0)
    (tmp_path / "features.json").write_text(json.dumps(cfg.to_dict()))
    result = featurize.run(["--input", str(tmp_path), "--output", str(tmp_path / "out"),
                            "--feature-config", str(tmp_path / "features.json"), "--splits", "100,0,0"])
    assert result.feature_version == cfg.version != FeatureConfig().version
    written = read_split(tmp_path / "out", "train")
    assert len(written) == 3 * 2 and all(e["mel"].shape == cfg.mel_shape == (126, 64) for e in written)

    (tmp_path / "bad.json").write_text(json.dumps({**cfg.to_dict(), "n_mels": 65}))
    with pytest.raises(ValueError, match="--feature-config .*hash to"):
        featurize.run(["--input", str(tmp_path), "--output", str(tmp_path / "out2"), "--feature-config", str(tmp_path / "bad.json")])


def test_an_incomplete_earlier_run_is_replaced_by_the_same_command(catalogue, featurized, tmp_path, caplog):
    """A run that died (a lost worker, a stopped cluster) leaves no metadata.json, which is written only
    after every shard is final: the same command then replaces what it left, without --overwrite."""
    manifest, _ = catalogue
    complete, _ = featurized
    output = tmp_path / "out"
    shutil.copytree(complete, output)
    (output / METADATA_FILE).unlink()
    (output / "train" / "part-00000-of-00009.tfrecord.gz").write_bytes(b"half a shard")
    featurize.run(["--input", str(manifest), "--output", str(output), "--progress", "off"])
    assert "holds an incomplete earlier run" in caplog.text
    metadata = json.loads((output / METADATA_FILE).read_text())
    shards = sorted(output.glob("*/part-*.tfrecord.gz")) + sorted(output.glob(f"{ERRORS_DIR}/*.parquet"))
    assert metadata["shard_files"] == len(shards) > 0
    assert not (output / "train" / "part-00000-of-00009.tfrecord.gz").exists()
