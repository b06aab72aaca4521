"""Bootstrap confidence intervals for any metric, through `scipy.stats.bootstrap`.

    value, low, high = bootstrap_metric(metrics.log_loss, labels, probs, seed=0)
    ci = bootstrap_mean(correct, seed=0)             # vectorised: a mean of per-example values
    table = metrics_with_intervals(labels, probs)    # {"accuracy": {"value", "low", "high"}, ...}

Examples are resampled with replacement (paired: an example's label and prediction move
together). The interval is the percentile interval by default ("BCa" is scipy's other choice;
it needs one extra metric call per example). A resample on which the metric is undefined (e.g.
ROC-AUC of a class missing from it) yields NaN and is left out; if too few remain, the interval
is (NaN, NaN).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from scipy import stats

from experiments.evaluation import metrics as metrics_lib
from experiments.evaluation import weighted
from experiments.evaluation.checks import check_choice, check_labels_probs, check_same_length

METHODS = ("percentile", "basic", "BCa")


class Interval(NamedTuple):
    """A metric's value on the full sample and its bootstrap interval."""

    value: float
    low: float
    high: float

    def as_dict(self) -> dict:
        return {"value": self.value, "low": self.low, "high": self.high}


def _check_args(confidence_level: float, n_resamples: int, method: str) -> None:
    if not 0 < confidence_level < 1:
        raise ValueError(f"confidence_level must be in (0, 1); got {confidence_level}")
    if n_resamples < 2:
        raise ValueError(f"n_resamples must be at least 2; got {n_resamples}")
    check_choice(method, METHODS, name="method")


def bootstrap_mean(values, *, confidence_level: float = 0.95, n_resamples: int = 1000,
                   method: str = "percentile", seed: int = 0) -> Interval:
    """Interval of the mean of per-example `values` (vectorised: no Python loop per resample).

        bootstrap_mean(predictions == labels)   # accuracy with its 95% interval
    """
    _check_args(confidence_level, n_resamples, method)
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or len(values) == 0:
        raise ValueError(f"values must be a non-empty 1-D array; got shape {values.shape}")
    value = float(values.mean())
    if len(values) < 2 or np.all(values == values[0]):
        return Interval(value, value, value)  # no spread to resample
    result = stats.bootstrap((values,), np.mean, n_resamples=n_resamples, vectorized=True,
                             confidence_level=confidence_level, method=method,
                             rng=np.random.default_rng(seed))
    return Interval(value, float(result.confidence_interval.low),
                    float(result.confidence_interval.high))


def bootstrap_metric(metric: Callable, labels, preds, *, confidence_level: float = 0.95,
                     n_resamples: int = 1000, method: str = "percentile",
                     seed: int = 0) -> Interval:
    """(value, low, high) of `metric(labels, preds)` over bootstrap resamples of the examples.

    `preds` may be class indices (N,) or probabilities (N, C): rows are resampled together
    with `labels`. Seedable: the same seed gives the same interval.

        bootstrap_metric(sklearn.metrics.f1_score, y_true, y_pred, seed=1)
    """
    _check_args(confidence_level, n_resamples, method)
    labels, preds = np.asarray(labels), np.asarray(preds)
    num_examples = check_same_length(labels=labels, preds=preds)
    if num_examples == 0:
        raise ValueError("labels and preds are empty (0 examples)")
    value = float(metric(labels, preds))
    if num_examples < 2:
        return Interval(value, value, value)

    def on_indices(index):
        index = index.astype(np.int64)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return float(metric(labels[index], preds[index]))
        except ValueError:  # the metric is undefined on this resample
            return math.nan

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns about NaN resamples / degenerate spread
        result = stats.bootstrap((np.arange(num_examples),), on_indices, vectorized=False,
                                 n_resamples=n_resamples, confidence_level=confidence_level,
                                 method=method, rng=np.random.default_rng(seed))
    low, high = result.confidence_interval
    if not (np.isfinite(low) and np.isfinite(high)):  # NaN resamples: percentiles of the rest
        low, high = _nan_tolerant_percentiles(result.bootstrap_distribution, confidence_level)
    return Interval(value, float(low), float(high))


def with_interval(metric: Callable, **bootstrap_kwargs) -> Callable:
    """Wrap `metric(labels, preds) -> float` into `metric(labels, preds) -> Interval`."""

    def metric_with_interval(labels, preds) -> Interval:
        return bootstrap_metric(metric, labels, preds, **bootstrap_kwargs)

    metric_with_interval.__name__ = f"{getattr(metric, '__name__', 'metric')}_with_interval"
    return metric_with_interval


def _per_example_statistics(labels, probs) -> dict[str, Callable]:
    """name -> statistic(weights_BN) -> (B,), each equal to its sklearn metric under weights."""
    num_classes = probs.shape[1]
    preds = probs.argmax(axis=1)
    correct = (preds == labels).astype(np.float64)
    # sklearn's log_loss clips probabilities at the dtype's eps before the log.
    nll = -np.log(np.clip(probs[np.arange(len(labels)), labels], np.finfo(probs.dtype).eps, 1))

    def precision_recall_f1(name):
        return lambda w: weighted.macro_precision_recall_f1(
            weighted.weighted_confusion(w, labels, preds, num_classes))[name]

    return {
        "accuracy": lambda w: weighted.weighted_mean(w, correct),
        "log_loss": lambda w: weighted.weighted_mean(w, nll),
        "precision_macro": precision_recall_f1("precision_macro"),
        "recall_macro": precision_recall_f1("recall_macro"),
        "f1_macro": precision_recall_f1("f1_macro"),
        "roc_auc_ovr": lambda w: weighted.macro_roc_auc_ovr(w, labels, probs),
    }


def metrics_with_intervals(labels, probs, *, names=metrics_lib.SCALAR_METRICS,
                           confidence_level: float = 0.95, n_resamples: int = 1000,
                           method: str = "percentile", seed: int = 0) -> dict:
    """{metric name: {"value", "low", "high"}} for the scalar classification metrics.

    Vectorised: each resample is a vector of example counts and every metric is computed for
    all resamples at once (`experiments.evaluation.weighted`); all metrics see the same
    resamples (same seed). Values are sklearn's, from `metrics.classification_metrics`.

        metrics_with_intervals(labels, probs, n_resamples=2000, seed=1)["f1_macro"]["low"]
    """
    _check_args(confidence_level, n_resamples, method)
    labels, probs = check_labels_probs(labels, probs)
    unknown = sorted(set(names) - set(metrics_lib.SCALAR_METRICS))
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; expected some of "
                         f"{metrics_lib.SCALAR_METRICS}")
    values = metrics_lib.classification_metrics(labels, probs)
    statistics = _per_example_statistics(labels, probs)
    num_examples = len(labels)
    result = {}
    for name in names:
        value = float(values[name])
        result[name] = bootstrap_weighted(
            statistics[name], num_examples, value, confidence_level=confidence_level,
            n_resamples=n_resamples, method=method, seed=seed).as_dict()
    return result


def bootstrap_weighted(statistic: Callable, num_examples: int, value: float, *,
                       confidence_level: float = 0.95, n_resamples: int = 1000,
                       method: str = "percentile", seed: int = 0) -> Interval:
    """Interval of a vectorised `statistic(weights_BN) -> (B,)` (see `weighted`) through
    `scipy.stats.bootstrap` over example indices; `value` is the full-sample value."""
    _check_args(confidence_level, n_resamples, method)
    if num_examples < 2:
        return Interval(value, value, value)

    def on_indices(index, axis=-1):
        index = np.asarray(index)
        flat = index.reshape(-1, index.shape[-1])
        return statistic(weighted.counts_from_indices(flat, num_examples)).reshape(
            index.shape[:-1])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # degenerate spread / NaN resamples
        boot = stats.bootstrap((np.arange(num_examples),), on_indices, vectorized=True,
                               n_resamples=n_resamples, confidence_level=confidence_level,
                               method=method, rng=np.random.default_rng(seed))
    low, high = boot.confidence_interval
    if not (np.isfinite(low) and np.isfinite(high)):
        low, high = _nan_tolerant_percentiles(boot.bootstrap_distribution, confidence_level)
    return Interval(value, float(low), float(high))


def _nan_tolerant_percentiles(distribution, confidence_level):
    finite = distribution[np.isfinite(distribution)]
    if len(finite) < max(10, len(distribution) // 2):
        return math.nan, math.nan
    tail = 100 * (1 - confidence_level) / 2
    return np.percentile(finite, [tail, 100 - tail])
