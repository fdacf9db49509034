"""Confidence, review flags and the review pick: the pure parts (calibration, tag profile, selection, the sheet)."""

from __future__ import annotations

import csv

import keras
import numpy as np
import pytest

from schemas import review_sheet
from trainer import tag_profile
from transforms import aggregate, calibration, review_selection


def _held_out(n: int = 400, seed: int = 0):
    """Tracks whose chance of being right is a known function of top score and typicality."""
    rng = np.random.default_rng(seed)
    top = rng.uniform(0.3, 0.99, n)
    typicality = rng.uniform(0.2, 1.0, n)
    chance = 1 / (1 + np.exp(-(3 * calibration.logit(top) + 6 * (typicality - 0.6))))
    return top, typicality, rng.random(n) < chance, chance


def test_the_calibrator_learns_that_less_typical_music_is_less_often_right():
    top, typicality, right, chance = _held_out(2000)
    fitted = calibration.fit(top, typicality, right)
    confidence = fitted.confidence(top, typicality)
    assert np.corrcoef(confidence, chance)[0, 1] > 0.95
    assert calibration.expected_calibration_error(confidence, right) < 0.05
    assert calibration.expected_calibration_error(top, right) > 0.1  # the raw top score was not a probability
    same_score = fitted.confidence(np.array([0.6, 0.6]), np.array([0.9, 0.3]))
    assert same_score[0] > same_score[1] + 0.3


def test_the_calibrator_survives_a_round_trip_and_refuses_other_features():
    top, typicality, right, _ = _held_out(100)
    fitted = calibration.fit(top, typicality, right)
    again = calibration.Calibration.from_dict(fitted.to_dict())
    np.testing.assert_allclose(again.confidence(top, typicality), fitted.confidence(top, typicality))
    with pytest.raises(ValueError, match="this cattag reads"):
        calibration.Calibration.from_dict({**fitted.to_dict(), "features": ["logit_top"]})
    # A model without a typicality reference: the track counts as typical, not as an error.
    assert 0 < float(fitted.confidence(0.9, None)) < 1


def test_the_flag_threshold_catches_most_wrong_tags_within_the_share_cap():
    confidence = np.linspace(0.05, 0.95, 100)
    right = confidence > 0.3  # the 26 wrong ones are the least confident
    threshold = calibration.flag_threshold(confidence, right)
    flagged = confidence < threshold
    assert flagged[~right].mean() >= calibration.FLAG_RECALL and flagged.mean() <= calibration.FLAG_MAX_SHARE
    # Wrong tags everywhere: the cap, not the recall, sets the threshold.
    rng = np.random.default_rng(1)
    capped = calibration.flag_threshold(confidence, rng.random(100) < 0.3)
    assert (confidence < capped).mean() <= calibration.FLAG_MAX_SHARE


def test_reliability_bins_count_every_track_and_ece_is_zero_when_confidence_is_accuracy():
    confidence = np.array([0.75] * 4 + [0.25] * 4)
    right = np.array([1, 1, 1, 0, 1, 0, 0, 0], bool)
    curve = calibration.reliability(confidence, right)
    assert sum(b["tracks"] for b in curve) == 8 and [b["accuracy"] for b in curve] == [0.25, 0.75]
    assert calibration.expected_calibration_error(confidence, right) == pytest.approx(0.0)
    summary = calibration.summary(confidence, right, flag_below=0.5)
    assert summary["flagged_share"] == 0.5 and summary["wrong_flagged"] == 0.75


def test_the_tag_profile_layer_computes_what_numpy_does():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)
    means = rng.uniform(0.05, 0.6, (3, 50))
    taggram = np.clip(means[labels] + rng.normal(0, 0.05, (300, 50)), 0.001, 0.999).astype(np.float32)
    profile = tag_profile.fit(taggram, labels, 4)  # label 3 has no segment: a zero profile
    assert tag_profile.SCALE_BOUNDS[0] <= profile.scale <= tag_profile.SCALE_BOUNDS[1]
    expected = tag_profile.probabilities(profile, taggram)
    assert (expected.argmax(axis=1) == labels).mean() > 0.95
    layer = tag_profile.TagProfile.of(profile)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(taggram)), expected, atol=1e-5)
    top = profile.top_tags([f"tag{i}" for i in range(50)], ["a", "b", "c", "d"], k=2)
    assert set(top) == {"a", "b", "c", "d"} and all(len(tags) == 2 for tags in top.values())


def test_the_review_pick_starts_with_the_most_doubtful_then_covers_other_music():
    embeddings = np.array([[1, 0, 0], [0.99, 0.1, 0], [0, 1, 0], [0, 0, 1]], float)
    confidence = np.array([0.2, 0.25, 0.4, 0.95])
    picked = review_selection.pick(confidence, embeddings, 3)
    # Track 1 is nearly as doubtful as track 0 but sounds the same: tracks 2 and 3 teach more.
    assert [i for i, _ in picked] == [0, 2, 3]
    assert "most likely wrong" in picked[0][1] and "unlike the tracks above" in picked[1][1]
    assert len(review_selection.pick(confidence, embeddings, 10)) == 4
    # Music a person already labelled counts as covered.
    steered = review_selection.pick(confidence, embeddings, 1, reviewed=np.array([[1, 0, 0]], float))
    assert steered[0][0] == 2


def test_a_calibrated_policy_flags_by_confidence_and_says_why():
    fitted = calibration.Calibration((1.0, 0.0, 0.0), 0.0, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), flag_below=0.7)
    policy = aggregate.ConfidencePolicy(min_confidence=fitted.flag_below, calibration=fitted)
    scores = np.array([0.52, 0.48])
    assert aggregate.review_reason(scores, policy, None, confidence=0.9) is None
    assert aggregate.review_reason(scores, policy, None, confidence=0.5) == "close runner-up"
    assert aggregate.review_reason(np.array([0.9, 0.1]), policy, None, confidence=0.5) == "low confidence"
    tags = aggregate.tag_track(np.array([[0.9, 0.1]]), np.array([[1.0, 0.0]]), ["a", "b"], policy=policy)
    assert tags.confidence == pytest.approx(0.9) and tags.tags == [("a", pytest.approx(0.9))]


def test_the_review_sheet_reads_back_what_a_reviewer_filled(tmp_path):
    path = tmp_path / "review.csv"
    review_sheet.write(str(path), [{"track_id": f"t{i}", "uri": f"/music/t{i}.mp3", "genre": "rock",
                                    "confidence": "0.4", "picked_for": "test"} for i in range(6)])
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == list(review_sheet.COLUMNS) and all(r["corrected_label"] == "" for r in rows)
    for row, label in zip(rows, ["jazz", "Not Music", "", "rock", "jazz", "pop"], strict=True):
        row["corrected_label"] = label
    rows[3]["uri"] = ""
    rows[5]["track_id"] = "t0"  # reviewed twice
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    corrections, bad = review_sheet.read(str(path))
    assert [(c.track_id, c.label, c.model_genre) for c in corrections] == [
        ("t0", "jazz", "rock"), ("t1", None, "rock"), ("t4", "jazz", "rock")]
    assert corrections[1].not_music
    assert [(row, reason.split(":")[0]) for row, _, _, reason in bad] == [
        (4, "unknown track"), (6, "track reviewed twice (first in row 1)")]
    (tmp_path / "other.csv").write_text("track_id,label\nt0,rock\n")
    with pytest.raises(review_sheet.ReviewSheetError, match="corrected_label"):
        review_sheet.read(str(tmp_path / "other.csv"))
