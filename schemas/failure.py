"""The failure record: one per input that did not make it into an output, naming its stage and reason.

Every pipeline writes its failures as rows of ERRORS_SCHEMA under OUT/_errors/ (featurize, tag, the
watch, describe alike); `cattag report` and the tests read them back. "_": dataset readers (Arrow,
pandas, Polars, Spark) skip names starting with "_" or ".", so that reading OUT whole gives the tags
(or examples) alone, not the errors' four columns in their place.
"""

from __future__ import annotations

import dataclasses

import pyarrow as pa

ERRORS_DIR = "_errors"


@dataclasses.dataclass(frozen=True)
class Failure:
    uri: str
    track_id: str
    stage: str  # "list", "read", "decode", "segment", "inference", ...
    error: str  # one line, for a person

    def to_row(self) -> dict[str, str]:
        return dataclasses.asdict(self)


# One row per Failure, whatever the pipeline: the columns are the record's fields.
ERRORS_SCHEMA = pa.schema([pa.field(field.name, pa.string(), nullable=False) for field in dataclasses.fields(Failure)])
