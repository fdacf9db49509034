"""Options shared by the pipelines that read a catalogue (featurize, tag, watch).

Which runner they run on, and its checks, is runners/pipeline.py's.

Beam parses the flags of every direct PipelineOptions subclass with one parser, so a flag used by
two pipelines must be declared once, here.
"""

from __future__ import annotations

import json

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from schemas.features import DEFAULT_PRESET, PRESETS, SHORT_TRACK_POLICIES, FeatureConfig, SegmentPolicy

_DEFAULT_POLICY = SegmentPolicy()


class CatalogueOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--input", help="catalogue: a directory, a glob, or a manifest (.csv, .jsonl, .parquet)")
        parser.add_argument("--output", help="output directory (any Beam filesystem path)")
        parser.add_argument("--segment-hop-s", type=float, default=_DEFAULT_POLICY.hop_s,
                            help="seconds between segment starts (default %(default)s)")
        parser.add_argument("--max-segments", type=int, default=_DEFAULT_POLICY.max_segments,
                            help="segments kept per track, spread over the track (default %(default)s)")
        parser.add_argument("--short-tracks", choices=SHORT_TRACK_POLICIES, default=_DEFAULT_POLICY.short_tracks,
                            help="tracks shorter than one segment: pad with silence or reject (default %(default)s)")
        parser.add_argument("--silence-floor-dbfs", type=float, default=_DEFAULT_POLICY.silence_floor_dbfs,
                            help="segments quieter than this RMS level are dropped and counted (default %(default)s)")
        parser.add_argument("--max-track-seconds", type=float, default=_DEFAULT_POLICY.max_track_s,
                            help="longer tracks are refused with a clear error (default %(default)s)")
        parser.add_argument("--overwrite", action="store_true",
                            help="replace the outputs of an earlier run in --output")
        parser.add_argument("--progress", choices=("auto", "on", "off"), default="auto",
                            help="progress lines during the run; auto: on for local runners (default %(default)s)")

    def segment_policy(self) -> SegmentPolicy:
        return SegmentPolicy(
            hop_s=self.segment_hop_s,
            max_segments=self.max_segments,
            short_tracks=self.short_tracks,
            silence_floor_dbfs=self.silence_floor_dbfs,
            max_track_s=self.max_track_seconds,
        )

    def require_paths(self) -> None:
        missing = [flag for flag, value in (("--input", self.input), ("--output", self.output)) if not value]
        if missing:
            raise ValueError(f"missing required flag(s): {', '.join(missing)}")


def load_feature_config(path: str | None) -> FeatureConfig:
    """A named config (schemas.features.PRESETS; default: DEFAULT_PRESET, what the default model
    needs), or one read from a JSON file of its fields."""
    path = path or DEFAULT_PRESET
    if path in PRESETS:
        return PRESETS[path]
    try:
        with FileSystems.open(path) as handle:
            return FeatureConfig.from_dict(json.loads(handle.read()))
    except (OSError, ValueError, TypeError) as err:
        raise ValueError(f"--feature-config {path}: {err}") from err
