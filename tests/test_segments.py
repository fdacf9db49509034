"""transforms/segments.py: windows, caps, short tracks and the silence test."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import tone
from transforms.segments import SegmentError, cut_segments, rms_dbfs, segment_indices


def test_indices_cover_the_track_on_the_hop_grid():
    assert segment_indices(100, segment_samples=30, hop_samples=30, max_segments=10) == [0, 1, 2]
    assert segment_indices(100, segment_samples=30, hop_samples=10, max_segments=10) == list(range(8))
    assert segment_indices(10, segment_samples=30, hop_samples=10, max_segments=10) == [0]


def test_the_cap_spreads_segments_over_the_whole_track():
    kept = segment_indices(1000, segment_samples=10, hop_samples=10, max_segments=5)
    assert kept == [0, 25, 50, 74, 99]


def test_rms_dbfs_of_a_full_scale_sine_is_minus_3():
    assert rms_dbfs(tone(100, 1.0, sr=8000, amplitude=1.0)) == pytest.approx(-3.01, abs=0.01)
    assert rms_dbfs(np.zeros(10)) < -190


def _cut(samples, **overrides):
    params = dict(segment_samples=100, hop_samples=100, max_segments=20, pad_short=True, silence_floor_dbfs=-60.0)
    return cut_segments(samples, **{**params, **overrides})


def test_silent_segments_are_dropped_and_counted():
    samples = np.concatenate([tone(50, 0.05, sr=8000), np.zeros(200, np.float32), tone(50, 0.025, sr=8000)])
    cut = _cut(samples)
    assert [index for index, _ in cut.segments] == [0, 1, 2, 3, 6, 7]
    assert cut.n_silent == 2


def test_short_tracks_are_padded_or_rejected():
    short = tone(50, 0.005, sr=8000)  # 40 samples
    cut = _cut(short)
    assert len(cut.segments) == 1 and len(cut.segments[0][1]) == 100
    with pytest.raises(SegmentError, match="too short: 40 samples"):
        _cut(short, pad_short=False)


def test_an_all_silent_track_is_an_error_not_an_empty_result():
    with pytest.raises(SegmentError, match="silent: all 3 segments"):
        _cut(np.full(300, 1e-5, np.float32))
