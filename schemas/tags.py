"""Arrow schemas of the Parquet outputs: failed inputs (and, later, track tags)."""

from __future__ import annotations

import pyarrow as pa

# One row per input that did not make it into the output, whatever the pipeline.
ERRORS_SCHEMA = pa.schema(
    [
        pa.field("uri", pa.string(), nullable=False),
        pa.field("track_id", pa.string(), nullable=False),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("error", pa.string(), nullable=False),
    ]
)
