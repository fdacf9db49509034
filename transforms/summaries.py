"""A run's figures as Beam combines: mel statistics, tracks per split and label, copies kept together,
failures by stage, and SummarizeByTag, which computes them all in one combine.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterator

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

from schemas import examples
from schemas.failure import Failure
from transforms.featurize_steps import moved_by_copies, split_of_entry
from transforms.records import TrackMelMoments, TrackSummary
from transforms.stats import Moments

MAX_FAILURES_LISTED = 100


class MelStatsFn(beam.CombineFn):
    """TrackMelMoments -> per-mel-bin mean and standard deviation over every frame of them."""

    def create_accumulator(self) -> Moments:
        return Moments()

    def add_input(self, accumulator: Moments, track: TrackMelMoments) -> Moments:
        return accumulator.merge(track.moments)

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


class CountCopiesFn(beam.CombineFn):
    """TrackSummary -> how many tracks have copies of their recording in the catalogue, and how many of
    them keeping their copies' split moved out of the split their own key gives (the first listed)."""

    LISTED = 20

    def __init__(self, proportions: tuple[float, float, float]):
        self._proportions = proportions

    def create_accumulator(self) -> tuple[int, int, list[str]]:
        return (0, 0, [])

    def add_input(self, accumulator, track: TrackSummary):
        with_copies, moved, listed = accumulator
        if not track.entry.copies_key:
            return accumulator
        if moved_by_copies(track.entry, self._proportions):
            moved += 1
            listed = sorted([*listed, track.entry.track_id])[:self.LISTED]
        return (with_copies + 1, moved, listed)

    def merge_accumulators(self, accumulators):
        with_copies, moved, listed = 0, 0, []
        for n, m, names in accumulators:
            with_copies, moved, listed = with_copies + n, moved + m, listed + names
        return (with_copies, moved, sorted(listed)[:self.LISTED])

    def extract_output(self, accumulator) -> dict:
        with_copies, moved, listed = accumulator
        return {"tracks_with_copies": with_copies, "tracks_moved": moved, "moved": listed}


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
