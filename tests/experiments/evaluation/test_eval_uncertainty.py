"""Bootstrap intervals: sane on a known sample, seeded, and the vectorised resample metrics
equal sklearn's weighted metrics."""

import numpy as np
import pytest
from sklearn import metrics as skm

from experiments.evaluation import metrics, uncertainty, weighted


def test_bootstrap_mean_of_a_known_sample():
    values = np.array([1.0] * 300 + [0.0] * 200)  # mean 0.6, standard error ~0.022
    value, low, high = uncertainty.bootstrap_mean(values, seed=0)
    assert value == pytest.approx(0.6)
    assert low < 0.6 < high
    assert high - low == pytest.approx(2 * 1.96 * np.sqrt(0.24 / 500), rel=0.2)
    assert uncertainty.bootstrap_mean(values, seed=0) == (value, low, high)
    assert uncertainty.bootstrap_mean(values, seed=1) != (value, low, high)
    assert uncertainty.bootstrap_mean(np.ones(5)) == (1.0, 1.0, 1.0)


def test_bootstrap_metric_wraps_any_metric():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    preds = np.where(rng.uniform(size=200) < 0.8, labels, 1 - labels)
    f1 = uncertainty.with_interval(skm.f1_score, n_resamples=200, seed=3)
    value, low, high = f1(labels, preds)
    assert value == pytest.approx(skm.f1_score(labels, preds))
    assert low < value < high and high - low < 0.2
    assert f1(labels, preds) == (value, low, high)
    with pytest.raises(ValueError, match="same number of examples"):
        f1(labels, preds[:-1])
    with pytest.raises(ValueError, match="confidence_level"):
        uncertainty.bootstrap_metric(skm.f1_score, labels, preds, confidence_level=95)


def _random_case(seed, n=60, classes=4):
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(classes), n)
    labels = rng.integers(0, classes, n)
    weights = rng.integers(0, 4, (3, n)).astype(float)
    return labels, probs, weights


@pytest.mark.parametrize("seed", [0, 1])
def test_vectorised_resample_metrics_equal_sklearn_with_sample_weight(seed):
    labels, probs, weights = _random_case(seed)
    preds = probs.argmax(1)
    confusion = weighted.weighted_confusion(weights, labels, preds, 4)
    prf = weighted.macro_precision_recall_f1(confusion)
    auc = weighted.macro_roc_auc_ovr(weights, labels, np.round(probs, 1))  # with ties
    for b, w in enumerate(weights):
        p, r, f, _ = skm.precision_recall_fscore_support(labels, preds, labels=range(4),
                                                         average="macro", sample_weight=w,
                                                         zero_division=0)
        assert (prf["precision_macro"][b], prf["recall_macro"][b], prf["f1_macro"][b]) == \
            pytest.approx((p, r, f))
        per_class = [skm.roc_auc_score(labels == c, np.round(probs, 1)[:, c], sample_weight=w)
                     for c in range(4)]
        assert auc[b] == pytest.approx(np.mean(per_class))
        nll = -np.log(probs[np.arange(len(labels)), labels])
        assert weighted.weighted_mean(w[None], nll)[0] == pytest.approx(
            skm.log_loss(labels, probs, sample_weight=w, labels=range(4)))
    counts = weighted.counts_from_indices(np.array([[0, 0, 2], [1, 2, 2]]), 3)
    assert counts.tolist() == [[2, 0, 1], [0, 1, 2]]


def test_metrics_with_intervals_contain_the_values_and_match_the_generic_path():
    labels, probs, _ = _random_case(2, n=150)
    table = uncertainty.metrics_with_intervals(labels, probs, n_resamples=300, seed=5)
    assert set(table) == set(metrics.SCALAR_METRICS)
    for name, entry in table.items():
        assert entry["low"] <= entry["value"] <= entry["high"], name
    generic = uncertainty.bootstrap_metric(metrics.log_loss, labels, probs, n_resamples=300,
                                           seed=5)
    assert (table["log_loss"]["low"], table["log_loss"]["high"]) == pytest.approx(
        (generic.low, generic.high))
    with pytest.raises(ValueError, match="unknown metric"):
        uncertainty.metrics_with_intervals(labels, probs, names=("brier",))
