"""ReuseCopies: `cattag tag --skip-existing --reuse-duplicates` gives a new input that is a copy of a track the
output already holds for this model that track's tags and embedding, instead of running the model again.

    entries --join held rows by content hash--> the same bytes under another name: reuse (no decode)
       '-> the rest --decode, fingerprint, health, loudness--> ClusterCopies with the held fingerprints
              --> a copy of a held track: reuse its row    no copy (or not decodable): on to TagEntries

A reused row is the held row with this file's own identity (track id, uri, content fingerprint, duration),
its own fingerprint, health and loudness (measured in that decode: a remaster is louder, an MP3 is cut at
16 kHz), the held copy's recording id, `duplicate_of` its preferred copy, and `reused_from` the track whose
tags it took. Tempo and key are the recording's, so they come with the tags.

The cost: one decode and fingerprint per new input before the model, which an input that turns out to have
no copy pays on top of its tagging (bench/RESULTS.md has the figure), and a scan of the held files each run:
their content hashes, and the fingerprints of this model's rows, of which only those sharing index keys with
a new input are clustered (transforms/held_tags.py).
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator

import apache_beam as beam
import numpy as np

from schemas import tags
from schemas.tag_output import TagOutput
from transforms import audio, duplicates
from transforms.catalogue import CatalogueEntry
from transforms.duplicate_steps import ClusterCopies
from transforms.held_tags import HELD, NEW, KeysOf, SetOf, held_rows_where, held_words, read_files
from transforms.health import Thresholds, true_peak_over
from transforms.track_health import check

LOUDNESS_COLUMNS = ("loudness_lufs", "loudness_range_lu", "true_peak_dbtp", "loudness_variation_lu")
REUSED_FROM = "reused_from"


def reused_row(held: dict, entry: CatalogueEntry, names: list[str], *, tagged_at: datetime.datetime | None,
               measured: dict | None = None) -> dict:
    """The row of `entry` that reuses the held row of a copy: `measured` holds this file's own duration,
    health and loudness columns (None: the same bytes as the held file, so the held values are its own)."""
    row = {name: held.get(name) for name in names}
    row.update(measured or {})
    row.update({
        "track_id": entry.track_id, "uri": entry.uri, tags.FINGERPRINT: entry.fingerprint,
        "recording_id": held.get("recording_id") or duplicates.own_recording_id(held["track_id"]),
        "duplicate_of": held.get("duplicate_of") or held["track_id"],
        REUSED_FROM: held["track_id"],
    })
    if tagged_at is not None:
        row["tagged_at"] = tagged_at
    return row


def _held_order(row: dict) -> tuple:
    """Which held row a copy reuses when several could serve: the smallest track id, its latest row."""
    return (row["track_id"], -row["tagged_at"].timestamp() if row.get("tagged_at") else 0.0)


class _SameBytes(beam.DoFn):
    """(content hash, {"entry": [...], "held": [rows]}) -> reused rows, and the entries with no held twin."""

    TODO = "todo"

    def __init__(self, names: list[str], tagged_at: datetime.datetime | None):
        self._names = names
        self._tagged_at = tagged_at

    def process(self, element) -> Iterator[dict | beam.pvalue.TaggedOutput]:
        _, grouped = element
        held = min(grouped["held"], key=_held_order, default=None)
        for entry in grouped["entry"]:
            if held is None or held["track_id"] == entry.track_id:
                yield beam.pvalue.TaggedOutput(self.TODO, entry)
            else:
                yield reused_row(held, entry, self._names, tagged_at=self._tagged_at)


class _MeasureNew(beam.DoFn):
    """Entry -> (track id, (entry, fingerprint words, own columns)); an entry that does not decode goes on
    to TagEntries, whose decode puts it in _errors/ with its stage and reason."""

    TODO = "todo"

    def __init__(self, sample_rate_hz: int, max_track_s: float, *, health: bool, loudness: bool,
                 thresholds: Thresholds):
        self._thresholds = thresholds
        self._rate = sample_rate_hz
        self._max_track_s = max_track_s
        self._health = health
        self._loudness = loudness

    def process(self, entry: CatalogueEntry):
        try:
            decoded = audio.decode(entry.uri, sample_rate_hz=self._rate, max_duration_s=self._max_track_s,
                                   loudness=self._loudness, health=self._health)
        except audio.AudioError:
            yield beam.pvalue.TaggedOutput(self.TODO, entry)
            return
        found = check(decoded.samples, decoded.sample_rate_hz, decoded.health if self._health else None,
                      self._thresholds)
        own = {"duration_s": decoded.duration_s}
        if self._health:
            own.update({name: value for name, value in found.columns().items()
                        if name not in ("recording_id", "duplicate_of", REUSED_FROM)})
        if self._loudness and decoded.loudness is not None:
            own.update({name: getattr(decoded.loudness, name) for name in LOUDNESS_COLUMNS})
            if self._health and true_peak_over(decoded.loudness.true_peak_dbtp, self._thresholds):
                own["health_flags"] = [*own["health_flags"], "true peak"]
        yield entry.track_id, (entry, np.asarray(found.fingerprint or (), np.uint32), own)


class _MatchHeld(beam.DoFn):
    """(track id, (entry, words, own)) + the clusters -> (held copy's track id, (entry, own)), or the entry
    on TODO when no held track is a copy of it."""

    TODO = "todo"

    def setup(self) -> None:
        self._clusters_id = None
        self._held_of: dict[str, str] = {}

    def process(self, element, clusters: dict):
        if id(clusters) != self._clusters_id:  # the side input, inverted once per worker
            self._clusters_id = id(clusters)
            self._held_of = {}
            for track, recording in sorted(clusters.items()):
                if track.startswith(HELD):
                    self._held_of.setdefault(recording, track[len(HELD):])
        track_id, (entry, _, own) = element
        held = self._held_of.get(clusters.get(NEW + track_id, ""))
        if held is None:
            yield beam.pvalue.TaggedOutput(self.TODO, entry)
        else:
            yield held, (entry, own)


class _ReuseMatched(beam.DoFn):
    def __init__(self, names: list[str], tagged_at: datetime.datetime | None):
        self._names = names
        self._tagged_at = tagged_at

    def process(self, element) -> Iterator[dict]:
        _, grouped = element
        copies = list(grouped["copy"])
        if not copies:
            return
        held = min(grouped["held"], key=_held_order)
        for entry, own in copies:
            yield reused_row(held, entry, self._names, tagged_at=self._tagged_at, measured=own)


class ReuseCopies(beam.PTransform):
    """Entries the output does not hold -> {"reused": tag rows taken from held copies, "todo": the entries
    to tag}. `names` are the run schema's columns; the run's settings say what the decode measures."""

    def __init__(self, output: str, model_version: str, names: list[str], *, tagged_at: datetime.datetime | None,
                 sample_rate_hz: int, max_track_s: float, health: bool, loudness: bool,
                 thresholds: Thresholds | None = None):
        super().__init__()
        self._output = output
        self._version = model_version
        self._names = names
        self._tagged_at = tagged_at
        self._decode = dict(sample_rate_hz=sample_rate_hz, max_track_s=max_track_s, health=health, loudness=loudness,
                            thresholds=thresholds or Thresholds())

    def expand(self, entries):
        version = self._version
        # The held files are scanned for the few rows this run uses (transforms/held_tags.py): reading every
        # held row through the runner kept the whole output in the DirectRunner's memory.
        held = TagOutput(self._output).tag_files()
        contents = beam.pvalue.AsSingleton(
            entries | "Contents" >> beam.FlatMap(lambda entry: [entry.fingerprint] if entry.fingerprint else [])
            | "ContentSet" >> beam.CombineGlobally(SetOf()))
        same = ({"entry": entries | "ByContent" >> beam.Map(lambda entry: (entry.fingerprint, entry)),
                 "held": read_files(entries.pipeline, held, "SameBytes") | "HeldSameBytes" >> beam.FlatMap(held_rows_where, tags.FINGERPRINT, contents, version)}
                | "JoinContent" >> beam.CoGroupByKey()
                | "SameBytes" >> beam.ParDo(_SameBytes(self._names, self._tagged_at)).with_outputs(
                    _SameBytes.TODO, main="reused"))
        measured = same[_SameBytes.TODO] | "MeasureNew" >> beam.ParDo(_MeasureNew(**self._decode)).with_outputs(
            _MeasureNew.TODO, main="measured")
        new_words = measured.measured | "NewWords" >> beam.Map(lambda kv: (NEW + kv[0], kv[1][1]))
        new_keys = beam.pvalue.AsSingleton(
            new_words | "NewFingerprints" >> beam.Values() | "NewKeys" >> beam.CombineGlobally(KeysOf()))
        words = ((read_files(entries.pipeline, held, "Words") | "HeldWords" >> beam.FlatMap(held_words, new_keys, version),
                  new_words)
                 | "AllWords" >> beam.Flatten())
        clusters = words | "ClusterCopies" >> ClusterCopies(self._output, only_pairs_with=NEW)
        matched = measured.measured | "MatchHeld" >> beam.ParDo(
            _MatchHeld(), beam.pvalue.AsSingleton(clusters)).with_outputs(_MatchHeld.TODO, main="copies")
        needed = beam.pvalue.AsSingleton(
            matched.copies | "HeldCopyIds" >> beam.Keys() | "HeldIdSet" >> beam.CombineGlobally(SetOf()))
        reused = ({"copy": matched.copies,
                   "held": read_files(entries.pipeline, held, "CopyRows")
                   | "HeldCopyRows" >> beam.FlatMap(held_rows_where, "track_id", needed, version)}
                  | "JoinHeldCopy" >> beam.CoGroupByKey()
                  | "ReuseMatched" >> beam.ParDo(_ReuseMatched(self._names, self._tagged_at)))
        todo = ((measured[_MeasureNew.TODO], matched[_MatchHeld.TODO]) | "StillToTag" >> beam.Flatten())
        return {"reused": (same.reused, reused) | "AllReused" >> beam.Flatten(), "todo": todo}
