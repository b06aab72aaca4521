"""Diversity: identical members correlate at 1 and never disagree; the gain is reported."""

import numpy as np
import pytest

from experiments.modeldev import combine, diversity


def test_identical_members_have_error_correlation_one():
    labels = np.asarray([0, 1, 2, 0, 1, 2, 0, 1])
    member = np.asarray([0, 1, 1, 0, 2, 2, 0, 0])
    preds = np.stack([member, member, member])
    corr = diversity.error_correlation(preds, labels)
    np.testing.assert_allclose(corr, np.ones((3, 3)))
    np.testing.assert_allclose(diversity.disagreement(preds), np.zeros((3, 3)))


def test_complementary_members():
    labels = np.zeros(4, int)
    preds = np.asarray([[0, 0, 1, 1], [1, 1, 0, 0]])        # errors exactly opposite
    assert diversity.error_correlation(preds, labels)[0, 1] == pytest.approx(-1.0)
    assert diversity.disagreement(preds)[0, 1] == 1.0
    # a member that is never wrong has no defined correlation
    always_right = np.asarray([[0, 0, 0, 0], [1, 0, 0, 0]])
    assert np.isnan(diversity.error_correlation(always_right, labels)[0, 1])


def test_summary_reports_gain_over_best_member():
    labels = np.asarray([0, 1, 0, 1, 0, 1])
    eye = np.eye(2)
    member_preds = np.asarray([[0, 1, 0, 1, 1, 0], [0, 1, 1, 1, 0, 0], [0, 0, 0, 1, 0, 1]])
    probs = eye[member_preds] * 0.8 + 0.1
    summary = diversity.diversity_summary(probs, labels, combine.vote_probs(probs))
    assert summary["best_member_accuracy"] == pytest.approx(5 / 6)
    assert summary["ensemble_accuracy"] == pytest.approx(5 / 6)
    assert summary["gain_over_best_member"] == pytest.approx(0.0)
    assert 0 < summary["mean_disagreement"] < 1
    with pytest.raises(ValueError, match="labels must have shape"):
        diversity.diversity_summary(probs, labels[:3], probs[0])
