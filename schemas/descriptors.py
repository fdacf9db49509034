"""Per-track audio descriptors (tempo, key, loudness): the record, its Arrow columns, and the rows of
`cattag describe`.

The same columns sit in every tag row (schemas/tags.py appends DESCRIPTOR_FIELDS) and in the
describe output, so a reader finds `bpm` under one name and type wherever it looks. Each value is
null where the track cannot have it (silent, too short, no pitched content, descriptors switched
off), and `descriptor_notes` then says why, one "column: reason" per null, joined by "; ".
How each is computed: docs/descriptors.md.
"""

from __future__ import annotations

import dataclasses
import datetime

import pyarrow as pa

DESCRIPTOR_FIELDS = (
    pa.field("bpm", pa.float32()),
    pa.field("bpm_confidence", pa.float32()),
    pa.field("bpm_alternatives", pa.list_(pa.float32())),  # half and double tempo
    pa.field("key", pa.string()),  # "<tonic> major|minor", sharps only
    pa.field("key_confidence", pa.float32()),
    pa.field("camelot", pa.string()),  # e.g. "8A" (A minor)
    pa.field("loudness_lufs", pa.float32()),  # integrated, ITU-R BS.1770-4
    pa.field("loudness_range_lu", pa.float32()),  # EBU Tech 3342
    pa.field("true_peak_dbtp", pa.float32()),  # EBU Tech 3341, 4x oversampled
    pa.field("loudness_variation_lu", pa.float32()),  # mean |400 ms block loudness - integrated|
    pa.field("onset_rate", pa.float32()),  # onsets per second
    pa.field("descriptor_notes", pa.string()),  # why values are null; null when none is
)
DESCRIPTOR_COLUMNS = tuple(field.name for field in DESCRIPTOR_FIELDS)
NOT_COMPUTED = "descriptors off"


@dataclasses.dataclass(frozen=True)
class Descriptors:
    bpm: float | None = None
    bpm_confidence: float | None = None
    bpm_alternatives: tuple[float, ...] | None = None
    key: str | None = None
    key_confidence: float | None = None
    camelot: str | None = None
    loudness_lufs: float | None = None
    loudness_range_lu: float | None = None
    true_peak_dbtp: float | None = None
    loudness_variation_lu: float | None = None
    onset_rate: float | None = None
    descriptor_notes: str | None = None

    def columns(self) -> dict:
        """The DESCRIPTOR_FIELDS values of a row."""
        values = dataclasses.asdict(self)
        if values["bpm_alternatives"] is not None:
            values["bpm_alternatives"] = list(values["bpm_alternatives"])
        return values


def not_computed() -> Descriptors:
    """The columns of a row tagged with --descriptors off."""
    return Descriptors(descriptor_notes=NOT_COMPUTED)


def describe_schema() -> pa.Schema:
    """Rows of `cattag describe`: the track, its descriptors, when it was described."""
    return pa.schema([
        pa.field("track_id", pa.string(), nullable=False),
        pa.field("uri", pa.string(), nullable=False),
        pa.field("content_fingerprint", pa.string()),
        pa.field("duration_s", pa.float64(), nullable=False),
        *DESCRIPTOR_FIELDS,
        pa.field("described_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ])


def describe_row(*, track_id: str, uri: str, fingerprint: str | None, duration_s: float,
                 descriptors: Descriptors, described_at: datetime.datetime) -> dict:
    return {"track_id": track_id, "uri": uri, "content_fingerprint": fingerprint, "duration_s": duration_s,
            **descriptors.columns(), "described_at": described_at}
