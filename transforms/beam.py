"""Thin DoFns and composite PTransforms over the pure functions of this package.

Every input leaves FeaturizeTracks either as segments (plus one TrackSummary) or as one Failure
naming its stage and reason; nothing is dropped silently.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterator, Sequence

import apache_beam as beam
import numpy as np
import threadpoolctl
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

from schemas import examples
from schemas.features import FeatureConfig, SegmentPolicy
from runners import quiet
from transforms import audio, mel, segments, splits
from transforms.catalogue import CatalogueEntry
from transforms.progress import ProgressTicker
from transforms.stats import Moments

_NAMESPACE = "cattag"
INPUTS = Metrics.counter(_NAMESPACE, "inputs")
DECODED = Metrics.counter(_NAMESPACE, "tracks_decoded")
FAILED = Metrics.counter(_NAMESPACE, "inputs_failed")
SEGMENTS = Metrics.counter(_NAMESPACE, "segments")
SILENT_SEGMENTS = Metrics.counter(_NAMESPACE, "segments_silent_dropped")
AUDIO_MS = Metrics.counter(_NAMESPACE, "audio_ms_decoded")
MAX_FAILURES_LISTED = 100


@dataclasses.dataclass(frozen=True)
class Failure:
    uri: str
    track_id: str
    stage: str
    error: str

    def to_row(self) -> dict[str, str]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class DecodedTrack:
    entry: CatalogueEntry
    audio: audio.DecodedAudio


@dataclasses.dataclass(frozen=True)
class Segment:
    entry: CatalogueEntry
    index: int
    samples: np.ndarray


@dataclasses.dataclass(frozen=True)
class MelSegment:
    entry: CatalogueEntry
    index: int
    mel: np.ndarray  # float32 [frames, n_mels]


@dataclasses.dataclass(frozen=True)
class TrackSummary:
    entry: CatalogueEntry
    duration_s: float
    n_segments: int
    n_silent: int


class DecodeAudio(beam.DoFn):
    """CatalogueEntry -> DecodedTrack, or a Failure on the FAILED output."""

    FAILED = "failed"

    def __init__(self, cfg: FeatureConfig, policy: SegmentPolicy, progress_dir: str | None = None):
        self._cfg = cfg
        self._policy = policy
        self._progress_dir = progress_dir

    def setup(self) -> None:
        quiet.filter_native_noise()  # libmpg123's notes on damaged MP3 frames (the failures still reach _errors/)
        self._ticker = ProgressTicker(self._progress_dir) if self._progress_dir else None

    def process(self, entry: CatalogueEntry) -> Iterator[DecodedTrack | beam.pvalue.TaggedOutput]:
        INPUTS.inc()
        try:
            decoded = audio.decode(
                entry.uri, sample_rate_hz=self._cfg.sample_rate_hz, max_duration_s=self._policy.max_track_s
            )
        except audio.AudioError as err:
            FAILED.inc()
            self._tick(0.0)
            yield beam.pvalue.TaggedOutput(self.FAILED, Failure(entry.uri, entry.track_id, err.stage, err.reason))
            return
        DECODED.inc()
        AUDIO_MS.inc(int(decoded.duration_s * 1000))
        self._tick(decoded.duration_s)
        yield DecodedTrack(entry, decoded)

    def _tick(self, audio_s: float) -> None:
        if self._ticker:
            self._ticker.tick(audio_s=audio_s)

    def finish_bundle(self) -> None:
        if self._ticker:
            self._ticker.flush()


class CutSegments(beam.DoFn):
    """DecodedTrack -> Segments, one TrackSummary on TRACKS, or a Failure on FAILED.

    With `keep_silent_tracks`, a track whose every segment is silent yields a TrackSummary with
    no segments instead of a Failure (the tagger gives it a row flagged for review).
    """

    FAILED = "failed"
    TRACKS = "tracks"

    def __init__(self, cfg: FeatureConfig, policy: SegmentPolicy, *, keep_silent_tracks: bool = False):
        self._cfg = cfg
        self._policy = policy
        self._keep_silent_tracks = keep_silent_tracks

    def process(self, track: DecodedTrack) -> Iterator[Segment | beam.pvalue.TaggedOutput]:
        try:
            cut = segments.cut_segments(
                track.audio.samples,
                segment_samples=self._cfg.segment_samples,
                hop_samples=round(self._policy.hop_s * self._cfg.sample_rate_hz),
                max_segments=self._policy.max_segments,
                pad_short=self._policy.short_tracks == "pad",
                silence_floor_dbfs=self._policy.silence_floor_dbfs,
            )
        except segments.SilentTrack as err:
            if not self._keep_silent_tracks:
                yield self._failure(track.entry, err)
                return
            cut = segments.SegmentCut([], err.n_silent)
        except segments.SegmentError as err:
            yield self._failure(track.entry, err)
            return
        SEGMENTS.inc(len(cut.segments))
        SILENT_SEGMENTS.inc(cut.n_silent)
        yield beam.pvalue.TaggedOutput(
            self.TRACKS, TrackSummary(track.entry, track.audio.duration_s, len(cut.segments), cut.n_silent)
        )
        for index, samples in cut.segments:
            yield Segment(track.entry, index, samples)

    def _failure(self, entry: CatalogueEntry, err: segments.SegmentError) -> beam.pvalue.TaggedOutput:
        FAILED.inc()
        return beam.pvalue.TaggedOutput(self.FAILED, Failure(entry.uri, entry.track_id, "segment", str(err)))


class ComputeLogMel(beam.DoFn):
    """Segment -> MelSegment. The mel filterbank is built once per worker in setup()."""

    def __init__(self, cfg: FeatureConfig):
        self._cfg = cfg

    def setup(self) -> None:
        self._basis = mel.mel_basis(self._cfg)
        # One BLAS thread per worker: Beam parallelizes across workers, and BLAS threads inside a
        # 130x1025x128 matmul only spin against them (2 workers on 2 cores ran 1.8x slower).
        threadpoolctl.threadpool_limits(limits=1, user_api="blas")

    def process(self, segment: Segment) -> Iterator[MelSegment]:
        yield MelSegment(segment.entry, segment.index, mel.log_mel(segment.samples, basis=self._basis))


class FeaturizeTracks(beam.PTransform):
    """CatalogueEntry -> {'segments': MelSegment, 'tracks': TrackSummary, 'failures': Failure}.

    The one path from audio to log-mels, shared by featurize and tag.
    """

    def __init__(self, cfg: FeatureConfig, policy: SegmentPolicy, progress_dir: str | None = None, *,
                 keep_silent_tracks: bool = False):
        super().__init__()
        self._cfg = cfg
        self._policy = policy
        self._progress_dir = progress_dir
        self._keep_silent_tracks = keep_silent_tracks

    def expand(self, entries):
        decoded = entries | "DecodeAudio" >> beam.ParDo(
            DecodeAudio(self._cfg, self._policy, self._progress_dir)
        ).with_outputs(DecodeAudio.FAILED, main="tracks")
        cut = decoded.tracks | "CutSegments" >> beam.ParDo(
            CutSegments(self._cfg, self._policy, keep_silent_tracks=self._keep_silent_tracks)
        ).with_outputs(CutSegments.FAILED, CutSegments.TRACKS, main="segments")
        mels = cut.segments | "ComputeLogMel" >> beam.ParDo(ComputeLogMel(self._cfg))
        failures = (decoded[DecodeAudio.FAILED], cut[CutSegments.FAILED]) | "FlattenFailures" >> beam.Flatten()
        return {"segments": mels, "tracks": cut[CutSegments.TRACKS], "failures": failures}


def split_of_entry(entry: CatalogueEntry, proportions: tuple[float, float, float]) -> str:
    return splits.split_of(splits.split_key(track_id=entry.track_id, artist=entry.artist), proportions=proportions)


class EncodeExample(beam.DoFn):
    """MelSegment -> (its split, serialized tf.Example in the schema of schemas.examples)."""

    def __init__(self, labels: Sequence[str], proportions: tuple[float, float, float]):
        self._labels = list(labels)
        self._proportions = proportions

    def setup(self) -> None:
        self._label_ids = {label: i for i, label in enumerate(self._labels)}

    def process(self, segment: MelSegment) -> Iterator[tuple[str, bytes]]:
        label = segment.entry.label or ""
        yield split_of_entry(segment.entry, self._proportions), examples.encode_example(
            track_id=segment.entry.track_id,
            segment_index=segment.index,
            label_id=self._label_ids.get(label, examples.UNLABELLED_ID),
            label=label,
            mel=segment.mel,
        )


class MelStatsFn(beam.CombineFn):
    """Per-mel-bin mean and standard deviation over every frame of the input segments."""

    def create_accumulator(self) -> Moments:
        return Moments()

    def add_input(self, accumulator: Moments, segment: MelSegment) -> Moments:
        return accumulator.add(segment.mel)

    def merge_accumulators(self, accumulators) -> Moments:
        merged = Moments()
        for accumulator in accumulators:
            merged = merged.merge(accumulator)
        return merged

    def extract_output(self, accumulator: Moments) -> dict[str, object]:
        return accumulator.to_dict()


class CountTracksFn(beam.CombineFn):
    """TrackSummary -> counts of tracks, segments and audio per split and label."""

    def __init__(self, proportions: tuple[float, float, float]):
        self._proportions = proportions

    def create_accumulator(self) -> dict:
        return {}

    def add_input(self, accumulator: dict, track: TrackSummary) -> dict:
        key = (split_of_entry(track.entry, self._proportions), track.entry.label or "")
        counts = accumulator.setdefault(key, collections.Counter())
        counts.update(tracks=1, segments=track.n_segments, silent_segments=track.n_silent)
        counts["audio_ms"] += int(track.duration_s * 1000)
        return accumulator

    def merge_accumulators(self, accumulators) -> dict:
        merged: dict = {}
        for accumulator in accumulators:
            for key, counts in accumulator.items():
                merged.setdefault(key, collections.Counter()).update(counts)
        return merged

    def extract_output(self, accumulator: dict) -> dict[str, dict[str, dict[str, int]]]:
        by_split: dict[str, dict[str, dict[str, int]]] = {split: {} for split in examples.SPLITS}
        for (split, label), counts in sorted(accumulator.items()):
            by_split[split][label] = {
                name: counts[name] for name in ("tracks", "segments", "silent_segments", "audio_ms")
            }
        return by_split


class SummarizeFailuresFn(beam.CombineFn):
    """Failure -> count, count per stage, and the first failures by uri (deterministic)."""

    def create_accumulator(self) -> tuple[collections.Counter, list[tuple[str, str, str, str]]]:
        return (collections.Counter(), [])

    def add_input(self, accumulator, failure: Failure):
        stages, listed = accumulator
        stages[failure.stage] += 1
        listed.append(dataclasses.astuple(failure))
        if len(listed) > 2 * MAX_FAILURES_LISTED:  # trim now and then, not on every input
            listed[:] = sorted(listed)[:MAX_FAILURES_LISTED]
        return accumulator

    def merge_accumulators(self, accumulators):
        stages, listed = collections.Counter(), []
        for other_stages, other_listed in accumulators:
            stages.update(other_stages)
            listed.extend(other_listed)
        return (stages, sorted(listed)[:MAX_FAILURES_LISTED])

    def extract_output(self, accumulator) -> dict[str, object]:
        stages, listed = accumulator
        return {
            "count": sum(stages.values()),
            "by_stage": dict(sorted(stages.items())),
            "listed": [Failure(*row).to_row() for row in sorted(listed)[:MAX_FAILURES_LISTED]],
        }


class _AccumulateBundle(beam.DoFn):
    """values -> one (tag, accumulator of `fn`) per bundle that had any."""

    def __init__(self, tag: str, fn: beam.CombineFn):
        self._tag = tag
        self._fn = fn

    def setup(self) -> None:
        self._fn.setup()

    def start_bundle(self) -> None:
        self._accumulator = None

    def process(self, value) -> Iterator[tuple[str, object]]:
        if self._accumulator is None:
            self._accumulator = self._fn.create_accumulator()
        self._accumulator = self._fn.add_input(self._accumulator, value)
        return iter(())

    def finish_bundle(self) -> Iterator[WindowedValue]:
        if self._accumulator is not None:
            accumulator, self._accumulator = self._fn.compact(self._accumulator), None
            yield WindowedValue((self._tag, accumulator), GlobalWindow().max_timestamp(), (GlobalWindow(),))

    def teardown(self) -> None:
        self._fn.teardown()


class _MergeByTag(beam.CombineFn):
    """(tag, accumulator) -> {tag: output}, every tag of `fns` present."""

    def __init__(self, fns: dict[str, beam.CombineFn]):
        self._fns = dict(fns)

    def create_accumulator(self) -> dict:
        return {tag: fn.create_accumulator() for tag, fn in self._fns.items()}

    def add_input(self, accumulator: dict, tagged) -> dict:
        tag, other = tagged
        accumulator[tag] = self._fns[tag].merge_accumulators([accumulator[tag], other])
        return accumulator

    def merge_accumulators(self, accumulators) -> dict:
        accumulators = list(accumulators)
        return {tag: fn.merge_accumulators([a[tag] for a in accumulators]) for tag, fn in self._fns.items()}

    def extract_output(self, accumulator: dict) -> dict:
        return {tag: fn.extract_output(accumulator[tag]) for tag, fn in self._fns.items()}


class SummarizeByTag(beam.PTransform):
    """{tag: PCollection} -> one {tag: output of that tag's CombineFn}, from empty inputs too.

    A run's figures (counts, failures, mel statistics) in one combine, where a CombineGlobally per
    figure adds two stages of the job each (every stage is a round of bundles on every worker, paid
    in start-up: bench/RESULTS.md). Each input is accumulated per bundle in the stage that produces
    it, as Beam does when it lifts a combine, so that only small accumulators reach the merge; a
    Flatten of the inputs themselves would be materialized whole before a combine after it (every
    training segment of a run, held in memory on the DirectRunner)."""

    def __init__(self, fns: dict[str, beam.CombineFn]):
        super().__init__()
        self._fns = dict(fns)

    def expand(self, inputs: dict):
        accumulators = [pcoll | f"Accumulate_{tag}" >> beam.ParDo(_AccumulateBundle(tag, self._fns[tag]))
                        for tag, pcoll in inputs.items()]
        return (accumulators
                | "AllAccumulators" >> beam.Flatten()
                | "Merge" >> beam.CombineGlobally(_MergeByTag(self._fns)))
