"""Aggregates over tasks x seeds with uncertainty, and performance profiles: pure NumPy / SciPy.

    interval = bootstrap_ci(speedups, "iqm", num_resamples=2000, seed=0)   # (low, high)
    rho = performance_profile(costs_TO, taus)        # (optimizers, taus): fraction of tasks

* Median and interquartile mean (IQM: the mean of the middle 50%, `scipy.stats.trim_mean(x,
  0.25)`, as Agarwal et al. 2021 recommend for few runs), each with a percentile bootstrap
  interval from `scipy.stats.bootstrap`, resampling the flat sample of (task, seed) values.
  A `+inf` entry (a diverged seed's normalised loss) stays in the sample as a huge finite value,
  so a statistic that reaches it comes back as None (JSON has no infinity).
* Performance profile (Dolan & More 2002): for cost t[p, s] of optimizer s on task p (lower is
  better; non-finite = failed), rho_s(tau) = fraction of tasks with t[p, s] <= tau * min_s t[p, s].
"""

from __future__ import annotations

import math

import numpy as np
import scipy.stats

STATISTICS = ("median", "iqm")
_HUGE = 1e100  # +inf stand-in inside the bootstrap (SciPy turns inf - inf into NaN)


def iqm(values, axis=-1):
    """Interquartile mean: the mean after trimming 25% from each end."""
    return scipy.stats.trim_mean(values, 0.25, axis=axis)


def _statistic(name: str):
    if name not in STATISTICS:
        raise ValueError(f"unknown statistic {name!r}; valid: {STATISTICS}")
    return {"median": lambda x, axis=-1: np.median(x, axis=axis), "iqm": iqm}[name]


def _public(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) and abs(value) < _HUGE / 10 else None


def bootstrap_ci(values, statistic: str, *, confidence: float = 0.95, num_resamples: int = 2000,
                 seed: int = 0) -> tuple[float | None, float | None]:
    """Percentile bootstrap interval of `statistic` ("median" | "iqm") over the flat `values`.

    Fewer than 2 values, or all equal, give the degenerate interval (value, value) (None for
    an empty sample). NaN entries are an error: count failures explicitly (e.g. +inf, 0).
    """
    sample = np.asarray(values, dtype=np.float64).reshape(-1)
    if np.isnan(sample).any():
        raise ValueError("bootstrap_ci: NaN in the sample; encode failures as +inf or 0")
    if sample.size == 0:
        return None, None
    sample = np.clip(sample, -_HUGE, _HUGE)
    function = _statistic(statistic)
    if sample.size < 2 or np.all(sample == sample[0]):
        point = _public(function(sample))
        return point, point
    result = scipy.stats.bootstrap(
        (sample,), function, n_resamples=num_resamples, confidence_level=confidence,
        method="percentile", vectorized=True, axis=-1, rng=np.random.default_rng(seed))
    return _public(result.confidence_interval.low), _public(result.confidence_interval.high)


def describe(values, *, confidence: float = 0.95, num_resamples: int = 2000,
             seed: int = 0) -> dict:
    """{n, median, median_ci, iqm, iqm_ci} of the flat sample `values` (see `bootstrap_ci`)."""
    sample = np.asarray(values, dtype=np.float64).reshape(-1)
    out = {"n": int(sample.size)}
    for name in STATISTICS:
        point = _public(_statistic(name)(np.clip(sample, -_HUGE, _HUGE))) if sample.size else None
        out[name] = point
        out[f"{name}_ci"] = list(bootstrap_ci(sample, name, confidence=confidence,
                                              num_resamples=num_resamples, seed=seed))
    return out


def performance_profile(costs, taus) -> np.ndarray:
    """rho[s, i]: fraction of tasks on which optimizer s's cost is within `taus[i]` x the best.

    Args:
      costs: (num_tasks, num_optimizers), lower is better, >= 0; NaN / inf = failed (never
        within any factor). A task's best is its smallest finite cost; a task with none counts
        as failed for everyone. A best of 0 is matched only by another 0.
      taus: factors >= 1.
    """
    costs = np.asarray(costs, dtype=np.float64)
    if costs.ndim != 2 or costs.shape[0] == 0:
        raise ValueError(f"costs must be (num_tasks >= 1, num_optimizers), got {costs.shape}")
    taus = np.asarray(taus, dtype=np.float64)
    if np.any(taus < 1):
        raise ValueError("performance profile factors tau must be >= 1")
    finite = np.where(np.isfinite(costs), costs, np.inf)
    best = finite.min(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(best > 0, finite / best, np.where(finite == 0, 1.0, np.inf))
    ratio = np.where(np.isfinite(best), ratio, np.inf)
    return (ratio[:, :, None] <= taus[None, None, :]).mean(axis=0)
