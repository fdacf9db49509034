"""featurize's metadata.json: what a featurize output holds, for `cattag train` and `cattag evaluate`.

    OUT/train/ validation/ test/   part-SSSSS-of-NNNNN.tfrecord.gz (schemas/examples.py)
    OUT/_errors/                   the failed inputs (schemas/failure.py)
    OUT/schema.pbtxt               the TFMD schema of the examples
    OUT/metadata.json              this record; written last, so its presence marks a complete output

One typed record, written by pipelines/featurize.py and read by trainer/data.py, checked when read.
Keys this code does not know are kept in `extra` and written back.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

METADATA_FILE = "metadata.json"
COUNT_KEYS = ("tracks", "segments", "silent_segments", "audio_ms")


class MetadataError(ValueError):
    """A metadata.json that is not one: missing or mistyped fields."""


@dataclasses.dataclass(frozen=True)
class FeaturizeMetadata:
    feature_config: dict[str, Any]
    feature_version: str
    labels: list[str]  # the vocabulary: label_id i is labels[i]
    counts: dict[str, dict[str, dict[str, int]]]  # split -> label -> COUNT_KEYS
    mel_stats: dict[str, Any]  # per-mel-bin mean and std over the training frames (transforms/stats.py)
    splits: dict[str, Any]  # split -> proportion
    # what keeps a track (or artist) in one split: "artist" or "track_id", after "recording, then " when the
    # copies of one recording were kept together (featurize --group-copies on)
    split_key: str | None = None
    segment_policy: dict[str, Any] | None = None
    inputs: int | None = None
    skipped_non_audio_files: int = 0
    totals: dict[str, int] | None = None  # COUNT_KEYS summed over splits and labels, and "failed"
    failed: dict[str, Any] | None = None  # count, by_stage, the first failures listed
    shard_files: int | None = None
    # tracks_with_copies, tracks_moved (out of the split their own key gives), moved (the first listed);
    # absent when copies were not looked for
    copies: dict[str, Any] | None = None
    files: dict[str, str] | None = None  # split -> shard pattern
    schema: str | None = None
    errors: str | None = None
    cattag_version: str | None = None
    created_at: str | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        problems = []
        if not isinstance(self.labels, list) or not all(isinstance(label, str) for label in self.labels):
            problems.append("labels (a list of strings)")
        if not isinstance(self.counts, dict) or not all(isinstance(v, dict) for v in self.counts.values()):
            problems.append("counts (split -> label -> counts)")
        if not isinstance(self.feature_config, dict) or not isinstance(self.feature_version, str):
            problems.append("feature_config")
        if not isinstance(self.mel_stats, dict):
            problems.append("mel_stats")
        if problems:
            raise MetadataError(f"bad {', '.join(problems)}")

    def segments(self, split: str) -> int:
        return sum(counts["segments"] for counts in self.counts.get(split, {}).values())

    def tracks(self, split: str) -> int:
        return sum(counts["tracks"] for counts in self.counts.get(split, {}).values())

    def to_json(self) -> str:
        data = {field.name: getattr(self, field.name) for field in dataclasses.fields(self) if field.name != "extra"}
        return json.dumps({**self.extra, **{k: v for k, v in data.items() if v is not None}}, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> FeaturizeMetadata:
        """Raises MetadataError for text that is not a featurize metadata.json."""
        try:
            data = json.loads(text)
        except ValueError as err:
            raise MetadataError(f"not JSON: {err}") from err
        if not isinstance(data, dict):
            raise MetadataError("not a JSON object")
        known = {field.name for field in dataclasses.fields(cls)} - {"extra"}
        required = ("feature_config", "feature_version", "labels", "counts", "mel_stats", "splits")
        missing = [name for name in required if name not in data]
        if missing:
            raise MetadataError(f"no {', '.join(missing)}")
        return cls(**{k: v for k, v in data.items() if k in known},
                   extra={k: v for k, v in data.items() if k not in known})
