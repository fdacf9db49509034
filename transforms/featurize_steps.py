"""The one path from audio to log-mels, shared by featurize and tag: thin DoFns over the pure functions
of this package, and the FeaturizeTracks composite.

Every input leaves FeaturizeTracks either as segments (plus one TrackSummary) or as one Failure
naming its stage and reason; nothing is dropped silently.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

import apache_beam as beam
import threadpoolctl
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

from runners import quiet
from schemas import examples
from schemas.failure import Failure
from schemas.features import FeatureConfig, SegmentPolicy
from transforms import audio, counters, mel, segments, splits
from transforms.catalogue import CatalogueEntry
from transforms.descriptors import DescribeTrack
from transforms.health import Thresholds
from transforms.progress import ProgressTicker
from transforms.records import DecodedTrack, MelSegment, Segment, TrackMelMoments, TrackSummary
from transforms.stats import Moments
from transforms.track_health import CheckTrack, FingerprintTrack


class DecodeAudio(beam.DoFn):
    """CatalogueEntry -> DecodedTrack, or a Failure on the FAILED output. With `loudness` (`health`), the
    decode also measures the track's loudness (checks it for faults) on the file's own channels and rate."""

    FAILED = "failed"

    def __init__(self, cfg: FeatureConfig, policy: SegmentPolicy, progress_dir: str | None = None, *,
                 loudness: bool = False, health: bool = False):
        self._cfg = cfg
        self._policy = policy
        self._progress_dir = progress_dir
        self._loudness = loudness
        self._health = health

    def setup(self) -> None:
        quiet.filter_native_noise()  # libmpg123's notes on damaged MP3 frames (the failures still reach _errors/)
        self._ticker = ProgressTicker(self._progress_dir) if self._progress_dir else None

    def process(self, entry: CatalogueEntry) -> Iterator[DecodedTrack | beam.pvalue.TaggedOutput]:
        counters.INPUTS.inc()
        try:
            decoded = audio.decode(
                entry.uri, sample_rate_hz=self._cfg.sample_rate_hz, max_duration_s=self._policy.max_track_s,
                loudness=self._loudness, health=self._health,
            )
        except audio.AudioError as err:
            counters.FAILED.inc()
            self._tick(0.0)
            yield beam.pvalue.TaggedOutput(self.FAILED, Failure(entry.uri, entry.track_id, err.stage, err.reason))
            return
        counters.DECODED.inc()
        counters.AUDIO_MS.inc(int(decoded.duration_s * 1000))
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
        counters.SEGMENTS.inc(len(cut.segments))
        counters.SILENT_SEGMENTS.inc(cut.n_silent)
        yield beam.pvalue.TaggedOutput(
            self.TRACKS, TrackSummary(track.entry, track.audio.duration_s, len(cut.segments), cut.n_silent)
        )
        for index, samples in cut.segments:
            yield Segment(track.entry, index, samples)

    def _failure(self, entry: CatalogueEntry, err: segments.SegmentError) -> beam.pvalue.TaggedOutput:
        counters.FAILED.inc()
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
    """CatalogueEntry -> {'segments': MelSegment, 'tracks': TrackSummary, 'failures': Failure}, and with
    `descriptors` also {'descriptors': (track_id, schemas.descriptors.Descriptors)}, with `health`
    {'health': (track_id, schemas.health.TrackHealth)} and with `fingerprints` {'fingerprints': (track_id,
    Chromaprint words)}, from the same decode.

    The one path from audio to log-mels, shared by featurize and tag.
    """

    def __init__(self, cfg: FeatureConfig, policy: SegmentPolicy, progress_dir: str | None = None, *,
                 keep_silent_tracks: bool = False, descriptors: bool = False, health: bool = False,
                 health_thresholds: Thresholds | None = None, fingerprints: bool = False):
        super().__init__()
        self._cfg = cfg
        self._policy = policy
        self._progress_dir = progress_dir
        self._keep_silent_tracks = keep_silent_tracks
        self._descriptors = descriptors
        self._health = health
        self._health_thresholds = health_thresholds or Thresholds()
        self._fingerprints = fingerprints

    def expand(self, entries):
        decoded = entries | "DecodeAudio" >> beam.ParDo(
            DecodeAudio(self._cfg, self._policy, self._progress_dir, loudness=self._descriptors, health=self._health)
        ).with_outputs(DecodeAudio.FAILED, main="tracks")
        cut = decoded.tracks | "CutSegments" >> beam.ParDo(
            CutSegments(self._cfg, self._policy, keep_silent_tracks=self._keep_silent_tracks)
        ).with_outputs(CutSegments.FAILED, CutSegments.TRACKS, main="segments")
        mels = cut.segments | "ComputeLogMel" >> beam.ParDo(ComputeLogMel(self._cfg))
        failures = (decoded[DecodeAudio.FAILED], cut[CutSegments.FAILED]) | "FlattenFailures" >> beam.Flatten()
        outputs = {"segments": mels, "tracks": cut[CutSegments.TRACKS], "failures": failures}
        if self._descriptors:
            outputs["descriptors"] = decoded.tracks | "Describe" >> beam.ParDo(DescribeTrack(self._cfg.sample_rate_hz))
        if self._health:
            outputs["health"] = decoded.tracks | "CheckHealth" >> beam.ParDo(CheckTrack(self._health_thresholds))
        if self._fingerprints:
            outputs["fingerprints"] = decoded.tracks | "Fingerprint" >> beam.ParDo(FingerprintTrack())
        return outputs


def split_of_entry(entry: CatalogueEntry, proportions: tuple[float, float, float]) -> str:
    return splits.split_of(splits.split_key(track_id=entry.track_id, artist=entry.artist, copies=entry.copies_key),
                           proportions=proportions)


def moved_by_copies(entry: CatalogueEntry, proportions: tuple[float, float, float]) -> bool:
    """Whether keeping the track with its copies put it in another split than its own key would."""
    return bool(entry.copies_key) and split_of_entry(entry, proportions) != split_of_entry(
        dataclasses.replace(entry, copies_key=None), proportions)


def with_copies_key(record, keys: dict[str, str]):
    """A segment or track summary whose track has copies -> the same, its entry carrying their split key."""
    key = keys.get(record.entry.track_id)
    if not key:
        return record
    return dataclasses.replace(record, entry=dataclasses.replace(record.entry, copies_key=key))


class EncodeExample(beam.DoFn):
    """MelSegment -> (its split, serialized tf.Example in the schema of schemas.examples); `keyed`:
    (its split, (track id, serialized tf.Example)), for a writer that may move the track's examples."""

    def __init__(self, labels: Sequence[str], proportions: tuple[float, float, float], *, keyed: bool = False):
        self._labels = list(labels)
        self._proportions = proportions
        self._keyed = keyed

    def setup(self) -> None:
        self._label_ids = {label: i for i, label in enumerate(self._labels)}

    def process(self, segment: MelSegment) -> Iterator[tuple[str, bytes]]:
        label = segment.entry.label or ""
        example = examples.encode_example(
            track_id=segment.entry.track_id,
            segment_index=segment.index,
            label_id=self._label_ids.get(label, examples.UNLABELLED_ID),
            label=label,
            mel=segment.mel,
        )
        split = split_of_entry(segment.entry, self._proportions)
        yield (split, (segment.entry.track_id, example)) if self._keyed else (split, example)


class SumMelsByTrack(beam.DoFn):
    """MelSegment -> TrackMelMoments: the moments of a bundle's segments per track, at the bundle's end
    (a track split over bundles gives one partial each: moments merge exactly)."""

    def start_bundle(self) -> None:
        self._tracks: dict[str, TrackMelMoments] = {}

    def process(self, segment: MelSegment) -> None:
        current = self._tracks.get(segment.entry.track_id)
        moments = (current.moments if current else Moments()).add(segment.mel)
        self._tracks[segment.entry.track_id] = TrackMelMoments(segment.entry, moments)

    def finish_bundle(self) -> Iterator[WindowedValue]:
        for track in self._tracks.values():
            yield WindowedValue(track, GlobalWindow().max_timestamp(), (GlobalWindow(),))
        self._tracks = {}
