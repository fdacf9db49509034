"""transforms/featurize_steps.py and summaries.py: each DoFn and CombineFn called directly, without a pipeline (SummarizeByTag in one)."""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pytest
import soundfile as sf
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

import tests.localalias  # noqa: F401  (registers aliasfs://)
from schemas import examples
from schemas.failure import Failure
from schemas.features import FeatureConfig, SegmentPolicy
from tests.conftest import tone
from transforms.audio import DecodedAudio
from transforms.catalogue import CatalogueEntry
from transforms.featurize_steps import ComputeLogMel, CutSegments, DecodeAudio, EncodeExample, SumMelsByTrack
from transforms.records import DecodedTrack, MelSegment, TrackSummary
from transforms.summaries import MAX_FAILURES_LISTED, CountTracksFn, MelStatsFn, SummarizeByTag, SummarizeFailuresFn

CFG = FeatureConfig()
POLICY = SegmentPolicy()


def run_dofn(dofn: beam.DoFn, element) -> tuple[list, dict[str, list]]:
    dofn.setup()
    main, tagged = [], {}
    for item in dofn.process(element):
        if isinstance(item, beam.pvalue.TaggedOutput):
            tagged.setdefault(item.tag, []).append(item.value)
        else:
            main.append(item)
    return main, tagged


def test_decode_audio_emits_a_track_or_a_tagged_failure(tmp_path):
    good = tmp_path / "good.ogg"
    sf.write(good, tone(440, 7.0, sr=44100, channels=2), 44100)
    main, tagged = run_dofn(DecodeAudio(CFG, POLICY), CatalogueEntry(str(good), "good", "rock"))
    assert len(main) == 1 and not tagged
    assert main[0].audio.duration_s == pytest.approx(7.0, abs=0.01) and main[0].entry.label == "rock"

    main, tagged = run_dofn(DecodeAudio(CFG, POLICY), CatalogueEntry(str(tmp_path / "gone.ogg"), "gone"))
    assert main == []
    assert tagged[DecodeAudio.FAILED] == [Failure(str(tmp_path / "gone.ogg"), "gone", "read", "no such file")]


def test_remote_objects_decode_through_a_local_copy(tmp_path):
    path = tmp_path / "remote clip.flac"
    sf.write(path, tone(440, 4.0, sr=22050), 22050)
    main, tagged = run_dofn(DecodeAudio(CFG, POLICY), CatalogueEntry("aliasfs://" + str(path).lstrip("/"), "r"))
    assert not tagged and main[0].audio.duration_s == pytest.approx(4.0)


def test_remote_mp3_with_id3_tag_decodes(catalogue_sample_dir):
    # libsndfile recognises an MP3 behind an ID3 tag (as the Bensound files are) only by its name.
    uri = "aliasfs://" + str(catalogue_sample_dir / "bensound-cute.mp3").lstrip("/")
    main, tagged = run_dofn(DecodeAudio(CFG, POLICY), CatalogueEntry(uri, "cute"))
    assert not tagged and main[0].audio.duration_s > 30


def test_progress_ticks_are_written_for_the_launcher(tmp_path):
    from transforms.progress import read_progress

    good = tmp_path / "a.wav"
    sf.write(good, tone(440, 2.0, sr=22050), 22050)
    dofn = DecodeAudio(CFG, POLICY, progress_dir=str(tmp_path))
    run_dofn(dofn, CatalogueEntry(str(good), "a"))
    dofn.process(CatalogueEntry(str(tmp_path / "missing.wav"), "m")).__next__()
    dofn.finish_bundle()
    assert read_progress(str(tmp_path)) == (2, pytest.approx(2.0))


def _track(samples: np.ndarray) -> DecodedTrack:
    return DecodedTrack(CatalogueEntry("u", "t", "jazz"), DecodedAudio(samples, CFG.sample_rate_hz, 22050, 1))


def test_cut_segments_emits_segments_and_one_summary():
    samples = np.concatenate([tone(440, 9.0, sr=CFG.sample_rate_hz), np.zeros(CFG.segment_samples, np.float32)])
    main, tagged = run_dofn(CutSegments(CFG, POLICY), _track(samples))
    assert [s.index for s in main] == [0, 1, 2]
    (summary,) = tagged[CutSegments.TRACKS]
    assert (summary.n_segments, summary.n_silent) == (3, 1)
    assert summary.duration_s == pytest.approx(12.0)


def test_cut_segments_routes_a_silent_track_to_failures():
    main, tagged = run_dofn(CutSegments(CFG, POLICY), _track(np.zeros(CFG.segment_samples * 2, np.float32)))
    assert main == [] and CutSegments.TRACKS not in tagged
    (failure,) = tagged[CutSegments.FAILED]
    assert failure.stage == "segment" and "silent" in failure.error


def test_log_mel_then_encode_gives_a_parseable_example():
    (segment,), _ = run_dofn(ComputeLogMel(CFG), next(iter(
        run_dofn(CutSegments(CFG, POLICY), _track(tone(440, 3.0, sr=CFG.sample_rate_hz)))[0])))
    assert segment.mel.shape == CFG.mel_shape
    ((split, serialized),), _ = run_dofn(EncodeExample(["blues", "jazz"], (0.0, 1.0, 0.0)), segment)
    decoded = examples.decode_example(serialized)
    assert split == "validation" and (decoded["label"], decoded["label_id"], decoded["track_id"]) == ("jazz", 1, "t")

    unlabelled = MelSegment(CatalogueEntry("u", "t2"), 0, segment.mel)
    ((split, serialized),), _ = run_dofn(EncodeExample(["blues", "jazz"], (0.0, 0.0, 1.0)), unlabelled)
    assert split == "test" and examples.decode_example(serialized)["label_id"] == examples.UNLABELLED_ID
    ((split, (track_id, keyed)),), _ = run_dofn(EncodeExample(["blues", "jazz"], (0.0, 0.0, 1.0), keyed=True),
                                                unlabelled)
    assert (split, track_id, keyed) == ("test", "t2", serialized)  # for a writer that may move it


def _combine(fn: beam.CombineFn, chunks: list[list]):
    # Two accumulators merged, as workers would.
    accumulators = []
    for chunk in chunks:
        accumulator = fn.create_accumulator()
        for item in chunk:
            accumulator = fn.add_input(accumulator, item)
        accumulators.append(accumulator)
    return fn.extract_output(fn.merge_accumulators(accumulators))


def _moments_by_bundle(bundles: list[list[MelSegment]]) -> list[list]:
    fn = SumMelsByTrack()
    partials = []
    for bundle in bundles:
        fn.start_bundle()
        for segment in bundle:
            fn.process(segment)
        partials.append([windowed.value for windowed in fn.finish_bundle()])
    return partials


def test_mel_stats_from_moments_per_track_and_bundle_match_numpy_over_all_frames():
    rng = np.random.default_rng(3)
    mels = [rng.normal(-30 + i, 5 + i, (130, 8)).astype(np.float32) for i in range(5)]
    # t0 and t1 have two segments each, in different bundles: a partial per bundle, merged exactly.
    segments = [MelSegment(CatalogueEntry("u", f"t{i % 3}"), i, m) for i, m in enumerate(mels)]
    partials = _moments_by_bundle([segments[:2], segments[2:]])
    assert [sorted(p.entry.track_id for p in bundle) for bundle in partials] == [["t0", "t1"], ["t0", "t1", "t2"]]
    stats = _combine(MelStatsFn(), partials)
    frames = np.concatenate(mels).astype(np.float64)
    assert stats["frames"] == 650
    np.testing.assert_allclose(stats["mean"], frames.mean(axis=0), atol=1e-5)
    np.testing.assert_allclose(stats["std"], frames.std(axis=0), atol=1e-5)
    assert _combine(MelStatsFn(), [[]]) == {"frames": 0, "mean": [], "std": []}


def test_summarize_by_tag_gives_each_input_its_own_combiner_output_from_empty_inputs_too():
    tracks = [TrackSummary(CatalogueEntry("u", f"t{i}", "jazz"), 10.0, 3, 0) for i in range(3)]
    with BeamTestPipeline() as pipeline:
        summary = {
            "n": pipeline | "Names" >> beam.Create(["a", "b", "c"]),
            "tracks": pipeline | "Tracks" >> beam.Create(tracks),
            "failures": pipeline | "NoFailures" >> beam.Create([]),
        } | SummarizeByTag({"n": beam.combiners.CountCombineFn(), "tracks": CountTracksFn((1.0, 0.0, 0.0)),
                            "failures": SummarizeFailuresFn()})
        assert_that(summary, equal_to([{
            "n": 3, "tracks": {"train": {"jazz": {"tracks": 3, "segments": 9, "silent_segments": 0, "audio_ms": 30000}},
                               "validation": {}, "test": {}},
            "failures": {"count": 0, "by_stage": {}, "listed": []}}]))


def test_track_counts_per_split_and_label():
    tracks = [TrackSummary(CatalogueEntry("u", f"t{i}", "rock" if i % 2 else "jazz"), 10.0, 3, 1) for i in range(10)]
    counts = _combine(CountTracksFn((1.0, 0.0, 0.0)), [tracks[:4], tracks[4:]])
    assert counts["train"] == {
        "jazz": {"tracks": 5, "segments": 15, "silent_segments": 5, "audio_ms": 50000},
        "rock": {"tracks": 5, "segments": 15, "silent_segments": 5, "audio_ms": 50000},
    }
    assert counts["test"] == {} and counts["validation"] == {}


def test_failure_summary_is_deterministic_and_bounded():
    failures = [Failure(f"file-{i:04d}", f"t{i}", "decode" if i % 3 else "read", "bad") for i in range(500)]
    forward = _combine(SummarizeFailuresFn(), [failures[:250], failures[250:]])
    backward = _combine(SummarizeFailuresFn(), [failures[::-1][:100], failures[::-1][100:]])
    assert forward == backward
    assert forward["count"] == 500 and forward["by_stage"] == {"decode": 333, "read": 167}
    assert len(forward["listed"]) == MAX_FAILURES_LISTED
    assert forward["listed"][0]["uri"] == "file-0000" and forward["listed"][-1]["uri"] == "file-0099"
