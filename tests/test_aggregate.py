"""transforms/aggregate.py: from segment predictions to track tags, on hand-made numbers."""

from __future__ import annotations

import numpy as np
import pytest

from schemas.model_card import MULTILABEL, ModelCard
from transforms.aggregate import (
    ConfidencePolicy,
    MultiLabel,
    Typicality,
    aggregate_scores,
    mean_embedding,
    review_reason,
    tag_track,
    top_k,
    typicality_reference,
)

LABELS = ["blues", "jazz", "rock"]
# Three segments: two say rock mildly, one says jazz strongly.
SEGMENTS = np.array([[0.1, 0.3, 0.6],
                     [0.2, 0.2, 0.6],
                     [0.0, 0.9, 0.1]])


def test_mean_is_the_average_segment_probability():
    np.testing.assert_allclose(aggregate_scores(SEGMENTS, "mean"), [0.1, 1.4 / 3, 1.3 / 3], rtol=1e-6)


def test_max_takes_each_class_best_segment_and_renormalizes():
    np.testing.assert_allclose(aggregate_scores(SEGMENTS, "max"), np.array([0.2, 0.9, 0.6]) / 1.7, rtol=1e-6)


def test_vote_counts_top_classes_and_breaks_ties_by_mean_probability():
    np.testing.assert_allclose(aggregate_scores(SEGMENTS, "vote"), [0, 1 / 3, 2 / 3], atol=1e-6)
    tie = np.array([[0.6, 0.4, 0.0], [0.3, 0.7, 0.0]])  # one vote each; jazz has the higher mean (0.55)
    scores = aggregate_scores(tie, "vote")
    assert scores.argmax() == 1 and scores[0] == pytest.approx(0.5, abs=1e-5)


def test_the_three_methods_can_disagree_on_the_genre():
    assert [LABELS[aggregate_scores(SEGMENTS, m).argmax()] for m in ("mean", "max", "vote")] == \
        ["jazz", "jazz", "rock"]


def test_unknown_method_and_empty_input_are_refused():
    with pytest.raises(ValueError, match="aggregation 'median'"):
        aggregate_scores(SEGMENTS, "median")
    with pytest.raises(ValueError, match="segments, classes"):
        aggregate_scores(np.zeros((0, 3)))


def test_top_k_is_best_first_and_stable_on_ties():
    assert top_k(np.array([0.25, 0.5, 0.25]), LABELS, 3) == [("jazz", 0.5), ("blues", 0.25), ("rock", 0.25)]
    assert top_k(np.array([0.25, 0.5, 0.25]), LABELS, 1) == [("jazz", 0.5)]


def test_mean_embedding_is_unit_length_and_points_along_the_mean():
    embedding = mean_embedding(np.array([[3.0, 0.0], [1.0, 2.0]]))
    np.testing.assert_allclose(embedding, np.array([2.0, 1.0]) / np.sqrt(5), rtol=1e-6)
    assert embedding.dtype == np.float32


def test_review_reasons_low_score_close_runner_up_and_atypical():
    policy = ConfidencePolicy(min_confidence=0.5, min_margin=0.1)
    assert review_reason(np.array([0.8, 0.15, 0.05]), policy) is None
    assert review_reason(np.array([0.45, 0.3, 0.25]), policy) == "low score"
    assert review_reason(np.array([0.52, 0.46, 0.02]), policy) == "close runner-up"
    typical = ConfidencePolicy(0.5, 0.1, Typicality(np.eye(3, dtype=np.float32), threshold=0.8))
    assert review_reason(np.array([0.8, 0.15, 0.05]), typical, typicality=0.9) is None
    assert review_reason(np.array([0.8, 0.15, 0.05]), typical, typicality=0.7) == "unlike the training music"


def test_tag_track_puts_it_together():
    embeddings = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    tags = tag_track(SEGMENTS, embeddings, LABELS, method="mean", k=2, policy=ConfidencePolicy(0.5, 0.1))
    assert tags.genre == "jazz" and tags.confidence == pytest.approx(1.4 / 3, rel=1e-6)
    assert [label for label, _ in tags.top_k] == ["jazz", "rock"]
    assert tags.low_confidence and tags.review_reason == "low score"  # 0.467 < 0.5
    assert tags.scores.sum() == pytest.approx(1.0)
    assert np.linalg.norm(tags.embedding) == pytest.approx(1.0)
    assert tags.typicality is None


def test_tag_track_refuses_misaligned_inputs():
    with pytest.raises(ValueError, match="3 segment probabilities but 2 embeddings"):
        tag_track(SEGMENTS, np.ones((2, 4)), LABELS)
    with pytest.raises(ValueError, match="3 class probabilities for 2 labels"):
        tag_track(SEGMENTS, np.ones((3, 4)), LABELS[:2])


def test_typicality_reference_centroids_and_threshold():
    train = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    labels, heldout = np.array([0, 0, 1]), np.array([[1.0, 0.0], [0.6, 0.8]])
    reference = typicality_reference(train, labels, heldout, n_classes=2, percentile=0)
    centroid0 = np.array([1.8, 0.6]) / np.linalg.norm([1.8, 0.6])
    np.testing.assert_allclose(reference["centroids"], [centroid0, [0.0, 1.0]], atol=1e-6)
    typicality = Typicality.from_dict(reference)
    assert typicality(np.array([1.0, 0.0], np.float32)) == pytest.approx(centroid0[0], rel=1e-6)
    # In-distribution scores the centroids did not see: held-out [1, 0] 0.949 and [0.6, 0.8] 0.822
    # (nearest: class 0); training tracks left out of their own centroid: [1, 0] and [0.8, 0.6]
    # score 0.8 against each other; [0, 1], alone in class 1, only against class 0: 0.316.
    assert reference["threshold"] == pytest.approx(float(centroid0 @ [0.0, 1.0]))
    median = typicality_reference(train, labels, heldout, n_classes=2, percentile=50)["threshold"]
    assert median == pytest.approx(0.8)
    assert (reference["heldout_tracks"], reference["leave_one_out_tracks"]) == (2, 3)


def test_confidence_policy_refuses_scores_outside_zero_one():
    with pytest.raises(ValueError, match="--min-confidence 1.5"):
        ConfidencePolicy(min_confidence=1.5)


def test_typicality_with_an_offset_compares_only_the_sound_part():
    # Embeddings of [2 class posteriors, 2 sound dims]: the same sound with any posterior is as typical.
    train = np.array([[1.0, 0.0, 1.0, 0.0], [1.0, 0.0, 0.9, 0.1], [0.0, 1.0, 0.0, 1.0], [0.0, 1.0, 0.1, 0.9]])
    reference = typicality_reference(train, np.array([0, 0, 1, 1]), train[:0], n_classes=2, offset=2)
    typicality = Typicality.from_dict(reference)
    assert reference["offset"] == 2 and np.shape(reference["centroids"]) == (2, 2)
    confident_odd = np.array([1.0, 0.0, -1.0, 0.0])  # sure of class 0, but sounds like nothing seen
    unsure_usual = np.array([0.5, 0.5, 1.0, 0.0])  # unsure, but sounds like class 0
    assert typicality(unsure_usual) == pytest.approx(1.0, abs=0.01)
    assert typicality(confident_odd) < 0 < typicality.threshold
    assert Typicality.from_dict({**reference, "offset": 0}).offset == 0
    assert Typicality.from_dict({k: v for k, v in reference.items() if k != "offset"}).offset == 0  # older models


def test_multilabel_tags_are_every_label_over_its_threshold_and_the_genre_is_the_best_genre_label():
    labels = ["rock", "female vocalists", "jazz", "80s"]
    multilabel = MultiLabel(np.array([0.3, 0.3, 0.5, 0.3], np.float32), np.array([True, False, True, False]))
    segments = np.array([[0.4, 0.9, 0.2, 0.1], [0.2, 0.7, 0.6, 0.5]])  # independent sigmoid scores
    tags = tag_track(segments, np.ones((2, 3)), labels, k=2, multilabel=multilabel)
    np.testing.assert_allclose(tags.scores, [0.3, 0.8, 0.4, 0.3], atol=1e-6)  # means, not renormalized
    assert [label for label, _ in tags.tags] == ["female vocalists", "rock", "80s"]  # jazz 0.4 < its 0.5
    assert tags.genre == "jazz" and tags.confidence == pytest.approx(0.4)  # the best genre label...
    assert tags.low_confidence and tags.review_reason == "no genre tag above its threshold"  # ...under its threshold
    assert [label for label, _ in tags.top_k] == ["female vocalists", "jazz"]
    sure = tag_track(segments[:1], np.ones((1, 3)), labels, multilabel=multilabel)
    assert sure.genre == "rock" and not sure.low_confidence and sure.review_reason is None
    card = ModelCard(name="t", arch="musicnn", labels=labels, embedding_dim=4, feature_version="v", feature_config={},
                     task=MULTILABEL, tag_thresholds={"rock": 0.1}, genre_labels=["rock", "jazz"])
    from_card = MultiLabel.from_card(card, labels)
    np.testing.assert_allclose(from_card.thresholds, [0.1, 0.2, 0.2, 0.2])
    assert from_card.genre_mask.tolist() == [True, False, True, False]
    np.testing.assert_allclose(MultiLabel.from_card(card, labels, threshold=0.7).thresholds, 0.7)
