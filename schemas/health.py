"""Per-track health (technical faults) and fingerprint: the record and its Arrow columns in tag rows.

Declared once here, appended to every tag row by schemas/tags.py. The measured values come from the
decode (transforms/health.py, on the file's own channels and rate), the flags from their documented
thresholds; `fingerprint` is Chromaprint's raw fingerprint of the decoded audio (transforms/chromaprint.py),
which finds copies of one recording however they were encoded. All null for a track tagged before
cattag measured them.
"""

from __future__ import annotations

import dataclasses

import pyarrow as pa

HEALTH_FIELDS = (
    pa.field("health_flags", pa.list_(pa.string())),  # e.g. ["clipping", "head silence"]; empty: none
    pa.field("clipped_runs", pa.int32()),  # runs of >= 3 samples at full scale, all channels
    pa.field("head_silence_s", pa.float32()),  # below -60 dBFS at the start
    pa.field("tail_silence_s", pa.float32()),  # ... at the end
    pa.field("longest_gap_s", pa.float32()),  # the longest stretch below -60 dBFS inside the track
    pa.field("dc_offset", pa.float32()),  # the largest |mean| of a channel, in full-scale units
    pa.field("dual_mono", pa.bool_()),  # null: not a two-channel file
    pa.field("spectral_cutoff_hz", pa.float32()),  # null: the spectrum reaches Nyquist
    pa.field("fingerprint", pa.list_(pa.uint32())),  # Chromaprint raw fingerprint (~8 words a second)
    # Copies of one recording share a recording_id ("rec-" + 16 hex digits); duplicate_of is the track id of
    # the cluster's preferred copy (lossless, fewest faults, smallest path), null for that copy and for a
    # track with no copy. Found across one `cattag tag` run (transforms/duplicate_steps.py); null from a watch.
    pa.field("recording_id", pa.string()),
    pa.field("duplicate_of", pa.string()),
    # With `cattag tag --skip-existing --reuse-duplicates`: the track whose tags this row took, a copy of this
    # recording the output held for the same model (transforms/reuse_copies.py); null when the model ran.
    pa.field("reused_from", pa.string()),
)
HEALTH_COLUMNS = tuple(field.name for field in HEALTH_FIELDS)


@dataclasses.dataclass(frozen=True)
class TrackHealth:
    health_flags: tuple[str, ...] | None = None
    clipped_runs: int | None = None
    head_silence_s: float | None = None
    tail_silence_s: float | None = None
    longest_gap_s: float | None = None
    dc_offset: float | None = None
    dual_mono: bool | None = None
    spectral_cutoff_hz: float | None = None
    fingerprint: tuple[int, ...] | None = None
    recording_id: str | None = None
    duplicate_of: str | None = None
    reused_from: str | None = None

    def columns(self) -> dict:
        values = dataclasses.asdict(self)
        for name in ("health_flags", "fingerprint"):
            if values[name] is not None:
                values[name] = list(values[name])
        return values
