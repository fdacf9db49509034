"""Every Beam metric cattag reports: one namespace, each name declared once.

Steps increment these objects; a launcher reads a finished job's value with `committed(result, metric)`,
by the same object, never by a string typed again. Runners show them under the `cattag` namespace (the
Flink web UI, Dataflow's job page).
"""

from __future__ import annotations

from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter

NAMESPACE = "cattag"

# Listing a catalogue (transforms/listing.py)
INPUTS_LISTED = Metrics.counter(NAMESPACE, "inputs_listed")
NON_AUDIO_LISTED = Metrics.counter(NAMESPACE, "listed_non_audio_files")
# Decoding and segmenting (transforms/featurize_steps.py)
INPUTS = Metrics.counter(NAMESPACE, "inputs")
DECODED = Metrics.counter(NAMESPACE, "tracks_decoded")
FAILED = Metrics.counter(NAMESPACE, "inputs_failed")
SEGMENTS = Metrics.counter(NAMESPACE, "segments")
SILENT_SEGMENTS = Metrics.counter(NAMESPACE, "segments_silent_dropped")
AUDIO_MS = Metrics.counter(NAMESPACE, "audio_ms_decoded")
# Tagging (transforms/tagging.py, transforms/fingerprint.py)
SKIPPED_AS_HELD = Metrics.counter(NAMESPACE, "inputs_skipped_as_held")
TAGGED = Metrics.counter(NAMESPACE, "tracks_tagged")
LOW_CONFIDENCE = Metrics.counter(NAMESPACE, "tracks_low_confidence")
INFERENCE_FAILED = Metrics.counter(NAMESPACE, "tracks_failed_inference")
# Watching a folder (transforms/watch.py, transforms/watch_sink.py)
WATCH_FILES_SEEN = Metrics.counter(NAMESPACE, "watch_files_emitted")
WATCH_FILES_WAITING = Metrics.gauge(NAMESPACE, "watch_files_being_written")
WATCH_TAGGED = Metrics.counter(NAMESPACE, "watch_tracks_written")
WATCH_FAILED = Metrics.counter(NAMESPACE, "watch_inputs_failed")
WATCH_LATENCY_MS = Metrics.distribution(NAMESPACE, "watch_latency_ms")  # file complete -> its row written


def committed(result, counter) -> int | None:
    """A counter's committed value from a finished job, or None when the runner reports no metrics."""
    name = counter.metric_name
    try:
        found = result.metrics().query(
            MetricsFilter().with_namespace(name.namespace).with_name(name.name))["counters"]
    except (NotImplementedError, AttributeError, KeyError, ValueError):
        return None
    return sum(c.committed or 0 for c in found) if found else None
