"""Baselines: the worked 90/10 case, closed forms against simulation, zero rule, heuristic."""

import numpy as np
import pytest

from experiments.evaluation import baselines

LABELS_90_10 = np.array([0] * 90 + [1] * 10)


def test_worked_case_uniform_random():
    result = baselines.random_baseline(LABELS_90_10, "uniform")
    assert result["accuracy"] == pytest.approx(0.5)
    assert result["f1_per_class"][1] == pytest.approx(1 / 6)  # 0.167


def test_worked_case_random_by_label_distribution():
    result = baselines.random_baseline(LABELS_90_10, "label_distribution")
    assert result["accuracy"] == pytest.approx(0.82)
    assert result["f1_per_class"][1] == pytest.approx(0.10)


def _simulate(labels, guess, num_classes, draws, rng):
    """Mean accuracy and per-class F1 of `draws` random guessers (vectorised counts)."""
    preds = rng.choice(num_classes, size=(draws, len(labels)), p=guess)
    accuracy = (preds == labels).mean(axis=1)
    f1 = []
    for c in range(num_classes):
        tp = ((preds == c) & (labels == c)).sum(axis=1)
        fp = ((preds == c) & (labels != c)).sum(axis=1)
        fn = ((preds != c) & (labels == c)).sum(axis=1)
        f1.append(np.where(tp > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0).mean())
    return accuracy.mean(), np.array(f1)


@pytest.mark.parametrize("strategy", ["uniform", "label_distribution"])
def test_closed_form_agrees_with_simulation(strategy):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), [600, 300, 100])
    train = np.repeat(np.arange(3), [500, 300, 200])
    result = baselines.random_baseline(labels, strategy, train_labels=train)
    accuracy, f1 = _simulate(labels, np.array(result["guess_distribution"]), 3, 400, rng)
    assert accuracy == pytest.approx(result["accuracy"], abs=0.005)
    assert f1 == pytest.approx(result["f1_per_class"], abs=0.01)
    # and on the small worked case the F1 of one draw still centres on the closed form
    small = baselines.random_baseline(LABELS_90_10, strategy)
    accuracy, f1 = _simulate(LABELS_90_10, np.array(small["guess_distribution"]), 2, 20000, rng)
    assert accuracy == pytest.approx(small["accuracy"], abs=0.003)
    assert f1[1] == pytest.approx(small["f1_per_class"][1], abs=0.015)


def test_zero_rule_uses_the_training_majority():
    train = np.array([2, 2, 2, 0, 1])
    labels = np.array([0, 0, 0, 2])
    result = baselines.zero_rule_baseline(train, labels, num_classes=3)
    assert result["predicted_class"] == 2
    assert result["accuracy"] == pytest.approx(0.25)
    assert result["f1_per_class"] == pytest.approx([0.0, 0.0, 0.4])


def test_heuristic_baselines_learn_separable_data():
    rng = np.random.default_rng(0)
    centres = np.array([[3.0, 0.0], [-3.0, 0.0], [0.0, 3.0]])
    y = rng.integers(0, 3, 300)
    x = centres[y] + rng.normal(size=(300, 2))
    for kind in baselines.HEURISTICS:
        result = baselines.heuristic_baseline(x[:200], y[:200], x[200:], y[200:], kind=kind)
        assert result["accuracy"] > 0.9, kind
    assert "log_loss" in result or kind == "nearest_centroid"


def test_bad_baseline_arguments():
    with pytest.raises(ValueError, match="strategy"):
        baselines.random_baseline(LABELS_90_10, "stratified")
    with pytest.raises(ValueError, match="class range"):
        baselines.zero_rule_baseline([0, 5], [0, 1], num_classes=2)
    with pytest.raises(ValueError, match="same number of examples"):
        baselines.heuristic_baseline(np.zeros((4, 2)), [0, 1, 0], np.zeros((2, 2)), [0, 1])
    with pytest.raises(ValueError, match="kind"):
        baselines.heuristic_baseline(np.zeros((2, 2)), [0, 1], np.zeros((2, 2)), [0, 1],
                                     kind="svm")
