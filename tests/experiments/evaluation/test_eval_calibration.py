"""Calibration: ECE of calibrated and of known-miscalibrated predictions, temperature scaling
recovers a planted temperature, selective prediction, the reliability diagram PNG."""

import matplotlib.image
import numpy as np
import pytest
from scipy import special

from experiments.evaluation import calibration, uncertainty


def _binary(confidence, correct):
    """Two-class probs whose top class (class 0) has `confidence`; label 0 where correct."""
    probs = np.stack([confidence, 1 - confidence], axis=1)
    return np.where(correct, 0, 1), probs


def test_perfectly_calibrated_predictions_have_ece_near_zero():
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.5, 1.0, 20000)
    labels, probs = _binary(confidence, rng.uniform(size=20000) < confidence)
    for strategy in calibration.BIN_STRATEGIES:
        assert calibration.expected_calibration_error(labels, probs,
                                                      strategy=strategy) < 0.015
    # the same predictions, reported more confident than they are, are not
    overconfident = np.stack([np.sqrt(confidence), 1 - np.sqrt(confidence)], axis=1)
    assert calibration.expected_calibration_error(labels, overconfident) > 0.1


def test_known_miscalibration_has_its_closed_form_ece():
    # 500 at confidence 0.8 with accuracy 0.6 (gap 0.2), 500 at 0.95 with accuracy 1 (gap 0.05)
    confidence = np.r_[np.full(500, 0.8), np.full(500, 0.95)]
    correct = np.r_[np.arange(500) < 300, np.ones(500, bool)]
    labels, probs = _binary(confidence, correct)
    assert calibration.expected_calibration_error(labels, probs) == pytest.approx(0.125)
    assert calibration.max_calibration_error(labels, probs) == pytest.approx(0.2)
    assert calibration.expected_calibration_error(
        labels, probs, strategy="quantile", num_bins=2) == pytest.approx(0.125)
    # one bin pools the two gaps of opposite sign: |0.8 - 0.875|
    assert calibration.expected_calibration_error(labels, probs, num_bins=1) == pytest.approx(
        0.075)
    bins = calibration.reliability_bins(labels, probs, num_bins=2, strategy="quantile")
    assert bins["count"] == [500, 500] and bins["accuracy"] == pytest.approx([0.6, 1.0])


def _planted(temperature, n, seed):
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=2.0, size=(n, 5))
    true_probs = special.softmax(logits, axis=1)
    labels = np.array([rng.choice(5, p=p) for p in true_probs])
    return labels, special.softmax(logits * temperature, axis=1)  # overconfident model


def test_temperature_scaling_recovers_a_planted_temperature():
    valid_labels, valid_probs = _planted(2.5, 4000, seed=0)
    test_labels, test_probs = _planted(2.5, 2000, seed=1)
    assert calibration.fit_temperature(valid_labels, valid_probs) == pytest.approx(2.5, rel=0.1)
    result = calibration.temperature_scaling(valid_labels, valid_probs, test_labels, test_probs)
    assert result["after"]["log_loss"] < result["before"]["log_loss"]
    assert result["after"]["ece"] < 0.5 * result["before"]["ece"]
    assert result["after"]["accuracy"] == pytest.approx(result["before"]["accuracy"])
    with pytest.raises(ValueError, match="temperature"):
        calibration.apply_temperature(test_probs, 0.0)


def test_confidence_scores_and_accuracy_coverage_curve():
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.5, 0.5], [0.2, 0.8]])
    labels = np.array([0, 1, 0, 1])  # correct, wrong, correct (tie -> class 0), correct
    scores = calibration.confidence_scores(probs)
    assert scores["max_prob"] == pytest.approx([0.9, 0.6, 0.5, 0.8])
    assert scores["entropy"][2] == pytest.approx(np.log(2))
    coverage, accuracy = calibration.accuracy_coverage_curve(labels, probs)
    assert coverage == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert accuracy == pytest.approx([1.0, 1.0, 2 / 3, 0.75])  # order 0.9, 0.8, 0.6, 0.5
    with pytest.raises(ValueError, match="score"):
        calibration.accuracy_coverage_curve(labels, probs, score="variance")


def test_reliability_diagram_is_a_png(tmp_path):
    labels, probs = _planted(1.0, 300, seed=2)
    bins = calibration.reliability_bins(labels, probs, num_bins=10)
    path = calibration.plot_reliability_diagram(bins, tmp_path / "r.png", title="test")
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 200 and image.std() > 0.05
    with pytest.raises(ValueError, match="strategy"):
        calibration.reliability_bins(labels, probs, strategy="log")


def test_ece_interval_contains_the_closed_form_and_matches_the_generic_bootstrap():
    confidence = np.r_[np.full(500, 0.8), np.full(500, 0.95)]
    labels, probs = _binary(confidence, np.r_[np.arange(500) < 300, np.ones(500, bool)])
    value, low, high = calibration.ece_interval(labels, probs, n_resamples=300, seed=2)
    assert value == pytest.approx(0.125) and low < 0.125 < high and high - low < 0.06
    generic = uncertainty.bootstrap_metric(calibration.expected_calibration_error, labels,
                                           probs, n_resamples=300, seed=2)
    assert (low, high) == pytest.approx((generic.low, generic.high))
    summary = calibration.calibration_summary(labels, probs, n_resamples=100)
    assert summary["quantile"]["ece_interval"]["value"] == summary["quantile"]["ece"]
