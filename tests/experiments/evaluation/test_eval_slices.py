"""Slices: per-slice metrics, Simpson's paradox on the kidney-stone counts, the slice finder on
a planted high-error slice."""

import numpy as np
import pytest

from experiments.evaluation import slices

KIDNEY_STONES = {"small stones": {"A": (81, 87), "B": (234, 270)},
                 "large stones": {"A": (192, 263), "B": (55, 80)}}


def test_simpsons_paradox_fires_on_the_kidney_stone_counts():
    result = slices.simpsons_paradox(KIDNEY_STONES)
    assert result["paradox"] is True
    assert result["slice_winners"] == {"small stones": "A", "large stones": "A"}
    assert result["pooled_winner"] == "B"
    assert result["pooled_rates"] == pytest.approx({"A": 273 / 350, "B": 289 / 350})


def test_simpsons_paradox_does_not_fire_on_a_consistent_table():
    consistent = {"small stones": {"A": (81, 87), "B": (234, 270)},
                  "large stones": {"A": (192, 263), "B": (150, 250)}}
    result = slices.simpsons_paradox(consistent)
    assert result["paradox"] is False and result["pooled_winner"] == "A"
    mixed = {"s": {"A": (9, 10), "B": (8, 10)}, "l": {"A": (1, 10), "B": (2, 10)}}
    assert slices.simpsons_paradox(mixed)["paradox"] is False


def test_simpsons_paradox_bad_tables():
    with pytest.raises(ValueError, match="exactly 2 models"):
        slices.simpsons_paradox({"s": {"A": (1, 2), "B": (1, 2), "C": (1, 2)},
                                 "l": {"A": (1, 2), "B": (1, 2), "C": (1, 2)}})
    with pytest.raises(ValueError, match="successes <= total"):
        slices.simpsons_paradox({"s": {"A": (3, 2), "B": (1, 2)}, "l": {"A": (1, 2),
                                                                          "B": (1, 2)}})


def test_success_table_counts_per_example_correctness():
    correct = {"A": np.array([1, 1, 0, 1]), "B": np.array([1, 0, 0, 0])}
    masks = {"x": np.array([1, 1, 0, 0], bool), "y": np.array([0, 0, 1, 1], bool)}
    assert slices.success_table(correct, masks) == {"x": {"A": (2, 2), "B": (1, 2)},
                                                    "y": {"A": (1, 2), "B": (0, 2)}}


def test_slice_metrics_per_class_feature_and_user_slices():
    labels = np.array([0, 0, 1, 1, 1, 2])
    probs = np.eye(3)[[0, 1, 1, 1, 0, 2]] * 0.9 + 0.1 / 3
    features = np.array([[0.0], [0.0], [1.0], [1.0], [1.0], [0.0]])
    table = slices.slice_metrics(labels, probs, {
        **slices.class_slices(labels, 3), **slices.feature_slices(features, ["flag"]),
        **slices.apply_slice_functions({"first_two": lambda x: np.arange(len(x)) < 2},
                                       features)}, n_resamples=100)
    assert table["class=1"]["size"] == 3 and table["class=1"]["accuracy"] == pytest.approx(2 / 3)
    assert table["flag=0"]["accuracy"] == pytest.approx(2 / 3)
    assert table["first_two"]["error"] == pytest.approx(0.5)
    interval = table["class=0"]["accuracy_interval"]
    assert interval["low"] <= 0.5 <= interval["high"]
    with pytest.raises(ValueError, match="slice 'nobody' is empty"):
        slices.slice_metrics(labels, probs, {"nobody": np.zeros(6, bool)})
    with pytest.raises(ValueError, match="mask shape"):
        slices.slice_metrics(labels, probs, {"short": np.ones(5, bool)})


def test_feature_slices_bin_continuous_features_by_quantile():
    values = np.arange(100.0)[:, None]
    masks = slices.feature_slices(values, ["t"], num_bins=4)
    assert len(masks) == 4 and all(m.sum() == 25 for m in masks.values())


def _errors_with_a_planted_slice(seed, planted_rate=0.6, base_rate=0.1, n=2000):
    rng = np.random.default_rng(seed)
    features = rng.uniform(size=(n, 3))
    planted = (features[:, 0] > 0.7) & (features[:, 1] < 0.5)
    errors = rng.uniform(size=n) < np.where(planted, planted_rate, base_rate)
    return errors, features, planted


def test_slice_finder_finds_a_planted_high_error_slice():
    errors, features, planted = _errors_with_a_planted_slice(0)
    result = slices.find_error_slices(errors, features, ["a", "b", "c"], min_size=30)
    top = result["slices"][0]
    assert top["significant"] and top["adjusted_p_value"] < 1e-6
    assert "a >" in top["description"] and "b <=" in top["description"]
    assert top["error"] > 0.45 and top["size"] >= 150
    found = np.ones(len(errors), bool)  # the top slice's members, from its conditions
    for condition in top["conditions"]:
        name, op, threshold = condition.split()
        column = features[:, "abc".index(name)]
        found &= column > float(threshold) if op == ">" else column <= float(threshold)
    overlap = (found & planted).sum() / (found | planted).sum()
    assert overlap > 0.6 and found.sum() == top["size"]


def test_slice_finder_reports_nothing_significant_without_a_planted_slice():
    errors, features, _ = _errors_with_a_planted_slice(1, planted_rate=0.1)
    result = slices.find_error_slices(errors, features, ["a", "b", "c"], min_size=30)
    assert result["tested_on"] == "held-out half"
    assert not any(s["significant"] for s in result["slices"])
    with pytest.raises(ValueError, match="features must be"):
        slices.find_error_slices(errors, features, ["a", "b"])
