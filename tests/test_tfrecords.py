"""transforms/tfrecords.py: the gzip TFRecord sink, read back by Beam and by TensorFlow."""

from __future__ import annotations

import glob
import subprocess
import sys

import apache_beam as beam
import tensorflow as tf
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from transforms.shards import Destination, WriteShardsTo
from transforms.tfrecords import GzipTFRecordFormat, WriteToGzipTFRecord, frame_record, masked_crc32c

RECORDS = [bytes([i % 256]) * (i * 37 % 5000) for i in range(300)]


def test_masked_crc_matches_the_tfrecord_reference_value():
    # Value from TensorFlow's crc32c masking: mask(crc32c(b"")) == 0xA282EAD8.
    assert masked_crc32c(b"") == 0xA282EAD8
    assert len(frame_record(b"abc")) == 8 + 4 + 3 + 4


def test_written_shards_are_gzip_tfrecords_that_beam_and_tf_read(tmp_path):
    with BeamTestPipeline() as pipeline:
        _ = pipeline | beam.Create(RECORDS) | WriteToGzipTFRecord(str(tmp_path / "part"), file_name_suffix=".tfrecord.gz")
    files = sorted(glob.glob(str(tmp_path / "part-*.tfrecord.gz")))
    assert files and all(open(f, "rb").read(2) == b"\x1f\x8b" for f in files)  # gzip magic

    with BeamTestPipeline() as pipeline:
        # Beam's reader checks both CRCs of every record.
        read = pipeline | beam.io.ReadFromTFRecord(str(tmp_path / "part-*"), compression_type=CompressionTypes.GZIP)
        assert_that(read, equal_to(RECORDS))

    read_by_tf = [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]
    assert sorted(read_by_tf) == sorted(RECORDS)


def test_featurize_never_imports_tensorflow(tmp_path):
    # TensorFlow costs 3 s and ~500 MiB per worker process; featurize writes Examples without it.
    code = (
        "import sys, soundfile as sf, numpy as np\n"
        f"sf.write({str(tmp_path / 'a.wav')!r}, (np.sin(np.arange(80000) / 5) * 0.3).astype('float32'), 22050)\n"
        "from pipelines import featurize\n"
        f"featurize.run(['--input', {str(tmp_path)!r}, '--output', {str(tmp_path / 'out')!r}])\n"
        "print('tensorflow' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "False"


def test_no_records_still_give_one_empty_shard_and_earlier_shards_go(tmp_path):
    (tmp_path / "part-00000-of-00003.tfrecord.gz").write_bytes(b"stale")
    with BeamTestPipeline() as pipeline:
        written = (pipeline | beam.Create([], reshuffle=False).with_output_types(bytes)
                   | WriteToGzipTFRecord(str(tmp_path / "part"), file_name_suffix=".tfrecord.gz"))
        assert_that(written, equal_to([str(tmp_path / "part-00000-of-00001.tfrecord.gz")]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part-00000-of-00001.tfrecord.gz"]  # no temp folder left
    assert list(tf.data.TFRecordDataset([str(tmp_path / "part-00000-of-00001.tfrecord.gz")], compression_type="GZIP")) == []


def test_shards_close_at_the_size_limit(tmp_path):
    with BeamTestPipeline() as pipeline:
        _ = (pipeline | beam.Create(RECORDS, reshuffle=False)
             | WriteToGzipTFRecord(str(tmp_path / "part"), file_name_suffix=".gz", max_shard_bytes=100_000))
    files = sorted(glob.glob(str(tmp_path / "part-*.gz")))
    assert len(files) >= sum(len(r) for r in RECORDS) // 100_000  # 749 kB of records, 100 kB shards
    assert sorted(r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP")) == sorted(RECORDS)


def test_a_file_cut_between_records_gives_two_files_that_tf_reads(tmp_path):
    path = tmp_path / "one.tfrecord.gz"
    writer = GzipTFRecordFormat().open(path.open("wb"))
    for record in RECORDS[:100]:
        writer.write(record)
    cut = writer.cut()
    for record in RECORDS[100:]:
        writer.write(record)
    writer.close()
    data = path.read_bytes()
    (tmp_path / "head.gz").write_bytes(data[:cut])
    (tmp_path / "tail.gz").write_bytes(data[cut:])
    for name, expected in (("one.tfrecord.gz", RECORDS), ("head.gz", RECORDS[:100]), ("tail.gz", RECORDS[100:])):
        assert [r.numpy() for r in tf.data.TFRecordDataset(str(tmp_path / name), compression_type="GZIP")] == expected


def test_written_records_move_to_the_destination_a_side_input_names_once_it_is_known(tmp_path):
    # 20 tracks of 10 records, sent by their own key to "a" (even) or "b" (odd); the copies found later
    # move t02 to "b" and t05 to "a". The errors (not movable) stay.
    records = [(f"t{i % 20:02d}", f"t{i % 20:02d}-{i // 20}".encode()) for i in range(200)]
    destinations = {name: Destination(GzipTFRecordFormat(), str(tmp_path / name / "part"), ".tfrecord.gz",
                                      max_bytes=400, movable=True) for name in ("a", "b")}
    destinations["errors"] = Destination(GzipTFRecordFormat(), str(tmp_path / "errors" / "part"), ".tfrecord.gz")
    with BeamTestPipeline() as pipeline:
        keyed = (pipeline | "Records" >> beam.Create(records)
                 | beam.Map(lambda r: ("a" if int(r[0][1:]) % 2 == 0 else "b", r)))
        errors = pipeline | "Errors" >> beam.Create([("errors", b"bad")])
        moves = beam.pvalue.AsDict(pipeline | "Moves" >> beam.Create([("t02", "b"), ("t05", "a")]))
        _ = (keyed, errors) | WriteShardsTo(destinations, moves=moves)

    def read(name: str) -> list[bytes]:
        with BeamTestPipeline() as check:
            got = check | beam.io.ReadFromTFRecord(str(tmp_path / name / "part-*"),
                                                   compression_type=CompressionTypes.GZIP)
            expected = {"a": [r for k, r in records if k != "t02" and (int(k[1:]) % 2 == 0 or k == "t05")],
                        "b": [r for k, r in records if k != "t05" and (int(k[1:]) % 2 == 1 or k == "t02")],
                        "errors": [b"bad"]}[name]
            assert_that(got, equal_to(expected))
        return sorted(glob.glob(str(tmp_path / name / "part-*")))

    assert all(read(name) for name in ("a", "b", "errors"))
    assert len(read("a")) > 2  # several files a split (400 bytes each): those without a moved track kept
    assert not glob.glob(str(tmp_path / "*" / ".temp-*"))
