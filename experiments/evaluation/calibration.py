"""Calibration and confidence: ECE / MCE, reliability diagrams, temperature scaling, selective
prediction.

    bins = reliability_bins(labels, probs, num_bins=15, strategy="uniform")   # or "quantile"
    expected_calibration_error(labels, probs), max_calibration_error(labels, probs)
    plot_reliability_diagram(bins, "reliability_test.png", title="test")
    temperature = fit_temperature(valid_labels, valid_probs)    # fitted on valid, never test
    calibrated = apply_temperature(test_probs, temperature)
    coverage, accuracy = accuracy_coverage_curve(labels, probs)

Calibration is of the top label: an example's confidence is its largest probability, and it is
correct when that class is the label. Equal-width ("uniform") bins split [0, 1]; equal-mass
("quantile") bins hold equally many examples (ties may merge bins). ECE is the
example-weighted mean |accuracy - confidence| over bins, MCE the largest over non-empty bins.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from scipy import optimize, special
from scipy import stats as scipy_stats

from experiments.evaluation import metrics as metrics_lib
from experiments.evaluation import uncertainty, weighted
from experiments.evaluation.checks import check_choice, check_labels_probs

BIN_STRATEGIES = ("uniform", "quantile")
CONFIDENCE_SCORES = ("max_prob", "neg_entropy", "margin")
_LOG_TEMPERATURE_RANGE = (math.log(1e-2), math.log(1e2))


def confidence_scores(probs) -> dict[str, np.ndarray]:
    """Per-example confidence measures: max probability, entropy (nats), top-2 margin."""
    probs = np.asarray(probs, dtype=np.float64)
    top2 = np.sort(probs, axis=1)[:, -2:]
    return {"max_prob": top2[:, 1], "entropy": scipy_stats.entropy(probs, axis=1),
            "margin": top2[:, 1] - top2[:, 0]}


def reliability_bins(labels, probs, *, num_bins: int = 15, strategy: str = "uniform") -> dict:
    """Per bin: edges, example count, mean confidence and accuracy (NaN for an empty bin)."""
    check_choice(strategy, BIN_STRATEGIES, name="strategy")
    if num_bins < 1:
        raise ValueError(f"num_bins must be positive; got {num_bins}")
    labels, probs = check_labels_probs(labels, probs)
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    if strategy == "uniform":
        edges = np.linspace(0.0, 1.0, num_bins + 1)
    else:
        edges = np.unique(np.quantile(confidence, np.linspace(0, 1, num_bins + 1)))
        if len(edges) == 1:  # every confidence equal: one bin around it
            edges = np.array([edges[0], np.nextafter(edges[0], np.inf)])
    count, _, _ = scipy_stats.binned_statistic(confidence, correct, "count", bins=edges)
    with np.errstate(invalid="ignore"):
        accuracy, _, _ = scipy_stats.binned_statistic(confidence, correct, "mean", bins=edges)
        mean_conf, _, _ = scipy_stats.binned_statistic(confidence, confidence, "mean",
                                                       bins=edges)
    return {"strategy": strategy, "edges": edges.tolist(), "count": count.astype(int).tolist(),
            "confidence": mean_conf.tolist(), "accuracy": accuracy.tolist()}


def _gaps(bins: dict) -> tuple[np.ndarray, np.ndarray]:
    count = np.asarray(bins["count"], dtype=np.float64)
    gap = np.abs(np.asarray(bins["accuracy"]) - np.asarray(bins["confidence"]))
    filled = count > 0
    return count[filled], gap[filled]


def expected_calibration_error(labels, probs, *, num_bins: int = 15,
                               strategy: str = "uniform") -> float:
    """sum_b (n_b / N) |accuracy_b - confidence_b| over `num_bins` bins of the top-label
    confidence.

        expected_calibration_error(labels, probs, strategy="quantile")
    """
    count, gap = _gaps(reliability_bins(labels, probs, num_bins=num_bins, strategy=strategy))
    return float(np.sum(count * gap) / np.sum(count))


def max_calibration_error(labels, probs, *, num_bins: int = 15,
                          strategy: str = "uniform") -> float:
    """max_b |accuracy_b - confidence_b| over the non-empty bins."""
    _, gap = _gaps(reliability_bins(labels, probs, num_bins=num_bins, strategy=strategy))
    return float(np.max(gap))


def ece_interval(labels, probs, *, num_bins: int = 15, strategy: str = "uniform",
                 **bootstrap_kwargs) -> uncertainty.Interval:
    """ECE with a bootstrap interval (vectorised; the bin edges of the full sample are kept
    fixed across resamples, so for "quantile" bins only the examples move, not the edges)."""
    bins = reliability_bins(labels, probs, num_bins=num_bins, strategy=strategy)
    labels, probs = check_labels_probs(labels, probs)
    confidence = probs.max(axis=1)
    gap = (probs.argmax(axis=1) == labels) - confidence
    edges = np.asarray(bins["edges"])
    bin_index = np.clip(np.searchsorted(edges, confidence, side="right") - 1, 0, len(edges) - 2)
    count, gaps = _gaps(bins)
    value = float(np.sum(count * gaps) / np.sum(count))
    return uncertainty.bootstrap_weighted(
        lambda w: weighted.weighted_ece(w, bin_index, gap, len(edges) - 1), len(labels), value,
        **bootstrap_kwargs)


def calibration_summary(labels, probs, *, num_bins: int = 15, **bootstrap_kwargs) -> dict:
    """ECE (with its bootstrap interval) and MCE with both binnings, and the reliability bins
    of each."""
    result = {}
    for strategy in BIN_STRATEGIES:
        bins = reliability_bins(labels, probs, num_bins=num_bins, strategy=strategy)
        count, gap = _gaps(bins)
        interval = ece_interval(labels, probs, num_bins=num_bins, strategy=strategy,
                                **bootstrap_kwargs)
        result[strategy] = {"ece": float(np.sum(count * gap) / np.sum(count)),
                            "ece_interval": interval.as_dict(), "mce": float(np.max(gap)),
                            "bins": bins}
    return result


def plot_reliability_diagram(bins: dict, path: str | Path, *, title: str = "") -> Path:
    """PNG of accuracy against confidence per bin (bars), the diagonal, and bin counts."""
    from matplotlib.figure import Figure  # Agg canvas via savefig; no pyplot, no global backend

    edges = np.asarray(bins["edges"])
    accuracy = np.nan_to_num(np.asarray(bins["accuracy"], dtype=np.float64))
    confidence = np.asarray(bins["confidence"], dtype=np.float64)
    count = np.asarray(bins["count"])
    figure = Figure(figsize=(5, 5.6), dpi=100)
    top, bottom = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    widths = np.diff(edges)
    top.bar(edges[:-1], accuracy, width=widths, align="edge", edgecolor="k", alpha=0.7,
            label="accuracy")
    top.plot(confidence, np.nan_to_num(confidence), "o", color="C3", markersize=3,
             label="mean confidence")
    top.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    top.set_ylabel("accuracy")
    top.set_ylim(0, 1)
    top.legend(loc="upper left", fontsize=8)
    count_, gap = _gaps(bins)
    ece = float(np.sum(count_ * gap) / np.sum(count_))
    top.set_title(f"{title} ({bins['strategy']} bins, ECE {ece:.3f})".strip())
    bottom.bar(edges[:-1], count, width=widths, align="edge", edgecolor="k", color="C1")
    bottom.set_xlabel("confidence (max probability)")
    bottom.set_ylabel("examples")
    bottom.set_xlim(0, 1)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path)
    return path


def apply_temperature(probs, temperature: float) -> np.ndarray:
    """softmax(log(probs) / temperature): temperature > 1 softens, < 1 sharpens."""
    if not temperature > 0:
        raise ValueError(f"temperature must be positive; got {temperature}")
    probs = np.asarray(probs, dtype=np.float64)
    logits = np.log(np.clip(probs, np.finfo(np.float64).tiny, 1.0))
    return special.softmax(logits / temperature, axis=1)


def fit_temperature(labels, probs) -> float:
    """The temperature minimising the log loss of `apply_temperature(probs, T)` on (labels,
    probs): fit on the valid split, apply to test. Searched on log T in [0.01, 100]."""
    labels, probs = check_labels_probs(labels, probs)
    classes = np.arange(probs.shape[1])
    from sklearn.metrics import log_loss

    def loss(log_temperature):
        return log_loss(labels, apply_temperature(probs, math.exp(log_temperature)),
                        labels=classes)

    result = optimize.minimize_scalar(loss, bounds=_LOG_TEMPERATURE_RANGE, method="bounded",
                                      options={"xatol": 1e-4})
    return float(math.exp(result.x))


def temperature_scaling(valid_labels, valid_probs, test_labels, test_probs, *,
                        num_bins: int = 15) -> dict:
    """Fit T on valid; test log loss and ECE (equal-width bins) before and after."""
    temperature = fit_temperature(valid_labels, valid_probs)
    scaled = apply_temperature(test_probs, temperature)
    result = {"temperature": temperature, "fitted_on": "valid", "applied_to": "test"}
    for label, probs in (("before", test_probs), ("after", scaled)):
        result[label] = {
            "log_loss": metrics_lib.log_loss(test_labels, probs),
            "ece": expected_calibration_error(test_labels, probs, num_bins=num_bins),
            "accuracy": metrics_lib.accuracy(test_labels, probs)}
    return result


def accuracy_coverage_curve(labels, probs, *, score: str = "max_prob"):
    """Selective prediction: keep the most confident k examples, k = 1..N.

    Returns (coverage (N,), accuracy (N,)): coverage k / N and the accuracy on those k.
    `score` ranks examples: "max_prob", "neg_entropy" or "margin".
    """
    check_choice(score, CONFIDENCE_SCORES, name="score")
    labels, probs = check_labels_probs(labels, probs)
    scores = confidence_scores(probs)
    ranking = -scores["entropy"] if score == "neg_entropy" else scores[score]
    order = np.argsort(-ranking, kind="stable")
    correct = (probs.argmax(axis=1) == labels)[order]
    kept = np.arange(1, len(labels) + 1)
    return kept / len(labels), np.cumsum(correct) / kept


def selective_summary(labels, probs, *, coverages=(0.5, 0.8, 0.9, 1.0)) -> dict:
    """Accuracy at a few coverages per confidence score, and the area under each curve."""
    result = {}
    for score in CONFIDENCE_SCORES:
        coverage, accuracy = accuracy_coverage_curve(labels, probs, score=score)
        at = {f"{c:g}": float(accuracy[max(0, math.ceil(c * len(coverage)) - 1)])
              for c in coverages}
        result[score] = {"accuracy_at_coverage": at, "area": float(np.mean(accuracy))}
    return result


def plot_accuracy_coverage(curves: dict, path: str | Path, *, title: str = "") -> Path:
    """PNG of accuracy against coverage, one line per name: {name: (coverage, accuracy)}."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4), dpi=100)
    axes = figure.subplots()
    for name, (coverage, accuracy) in curves.items():
        axes.plot(coverage, accuracy, label=name)
    axes.set_xlabel("coverage (fraction kept, most confident first)")
    axes.set_ylabel("accuracy on kept examples")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path)
    return path
