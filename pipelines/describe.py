"""cattag describe: a catalogue -> tempo, key and loudness per track in Parquet, with no model.

    ListCatalogue -> FanOutDecode -> Fingerprint -> DescribeEntries (decode with a loudness meter,
        then transforms.descriptors) -> WriteDescriptors (OUT/descriptors-<run>-*.parquet)
        '-> failures (+ rejected) -> WriteErrors (OUT/_errors/*.parquet)

The same decode, estimators and columns as `cattag tag` (schemas/descriptors.py), for users who want
a local audio-features tool; the same input forms, errors and runner flags as every pipeline.
"""

from __future__ import annotations

import datetime
import logging
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.options import CatalogueOptions
from runners.pipeline import make_pipeline, progress_is_local
from schemas import descriptors as descriptors_schema
from schemas.failure import ERRORS_DIR, ERRORS_SCHEMA, Failure
from schemas.features import DEFAULT_PRESET, PRESETS
from schemas.tag_output import read_tables
from transforms.descriptors import DescribeTrack
from transforms.featurize_steps import DecodeAudio
from transforms.fingerprint import FingerprintInputs
from transforms.listing import ListCatalogue, ListingPlan, plan_listing
from transforms.parquet_shards import WriteToParquetShards
from transforms.progress import ProgressMonitor
from transforms.records import DecodedTrack

_LOG = logging.getLogger(__name__)
PASSES_BEAM_FLAGS = True
OPTIONS = (CatalogueOptions,)  # for `cattag describe --help`
FILE_PREFIX = "descriptors"
# Tempo and key are estimated at the rate they were measured at (bench/RESULTS.md): musicnn's 16 kHz,
# which is also what `cattag tag` decodes for the default model, so both commands give the same values.
_DECODE = PRESETS[DEFAULT_PRESET]


def run(argv: list[str] | None = None, test_pipeline: beam.Pipeline | None = None) -> dict:
    """Runs describe; returns counts {inputs, described, failed, wall_s, output}."""
    options = PipelineOptions(argv)
    catalogue_options = options.view_as(CatalogueOptions)
    catalogue_options.require_paths()
    output = catalogue_options.output.rstrip("/")
    plan = plan_listing(catalogue_options.input, labels="none")
    _prepare_output(output, overwrite=catalogue_options.overwrite)
    run_id = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
    _LOG.info("describe: %s (%s) -> %s", plan.source,
              f"{plan.total} inputs" if plan.total is not None else "listed by the workers", output)

    local_progress = progress_is_local(options, catalogue_options.progress)
    progress_dir = tempfile.mkdtemp(prefix="cattag-progress-") if local_progress else None
    pipeline = test_pipeline or make_pipeline(options)
    build(pipeline, plan, output=output, run_id=run_id, policy=catalogue_options.segment_policy(),
          progress_dir=progress_dir)
    started = time.monotonic()
    try:
        if progress_dir:
            with ProgressMonitor(progress_dir, total=plan.total, label="describe"):
                pipeline.run().wait_until_finish()
        else:
            pipeline.run().wait_until_finish()
    finally:
        if progress_dir:
            shutil.rmtree(progress_dir, ignore_errors=True)
    wall_s = time.monotonic() - started
    described = read_tables(_match(FileSystems.join(output, f"{FILE_PREFIX}-{run_id}-*.parquet")), ["track_id"])
    errors = read_tables(_match(FileSystems.join(output, ERRORS_DIR, "*.parquet")), ["uri"])
    result = {"output": output, "described": described.num_rows if described else 0,
              "failed": errors.num_rows if errors else 0, "wall_s": wall_s}
    result["inputs"] = result["described"] + result["failed"]
    _LOG.info("describe done: %d inputs, %d described, %d failed in %.1f s -> %s", result["inputs"],
              result["described"], result["failed"], wall_s, output)
    return result


def build(pipeline: beam.Pipeline, plan: ListingPlan, *, output: str, run_id: str, policy,
          progress_dir: str | None = None) -> beam.PCollection:
    listed = pipeline | "ListCatalogue" >> ListCatalogue(plan, labels="none")
    entries = listed["entries"] | "FanOutDecode" >> beam.Reshuffle()
    read = entries | "Fingerprint" >> beam.ParDo(FingerprintInputs()).with_outputs(
        FingerprintInputs.FAILED, main="entries")
    decoded = read.entries | "DecodeAudio" >> beam.ParDo(
        DecodeAudio(_DECODE, policy, progress_dir, loudness=True)).with_outputs(DecodeAudio.FAILED, main="tracks")
    described_at = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    rows = decoded.tracks | "Describe" >> beam.ParDo(DescribeRows(_DECODE.sample_rate_hz, described_at))
    _ = rows | "WriteDescriptors" >> WriteToParquetShards(FileSystems.join(output, f"{FILE_PREFIX}-{run_id}"),
                                                         descriptors_schema.describe_schema())
    _ = ((read[FingerprintInputs.FAILED], decoded[DecodeAudio.FAILED], listed["rejected"])
         | "AllFailures" >> beam.Flatten()
         | "FailureRows" >> beam.Map(Failure.to_row)
         | "WriteErrors" >> WriteToParquetShards(FileSystems.join(output, ERRORS_DIR, "part"), ERRORS_SCHEMA))
    return rows


class DescribeRows(DescribeTrack):
    """DecodedTrack -> a row of schemas.descriptors.describe_schema."""

    def __init__(self, sample_rate_hz: int, described_at: datetime.datetime):
        super().__init__(sample_rate_hz)
        self._described_at = described_at

    def process(self, track: DecodedTrack) -> Iterator[dict]:
        yield descriptors_schema.describe_row(
            track_id=track.entry.track_id, uri=track.entry.uri, fingerprint=track.entry.fingerprint,
            duration_s=track.audio.duration_s, descriptors=self.describe(track), described_at=self._described_at)


def _prepare_output(output: str, *, overwrite: bool) -> None:
    held = _match(FileSystems.join(output, f"{FILE_PREFIX}-*.parquet"))
    if held and not overwrite:
        raise ValueError(f"--output {output} already holds descriptors from an earlier run ({len(held)} file(s)); "
                         "pass --overwrite to replace them")
    stale = held + ([FileSystems.join(output, ERRORS_DIR)] if FileSystems.exists(FileSystems.join(output, ERRORS_DIR))
                    else [])
    if stale:
        FileSystems.delete(stale)


def _match(pattern: str) -> list[str]:
    matched = FileSystems.match([pattern])[0].metadata_list
    return sorted(m.path for m in matched)
