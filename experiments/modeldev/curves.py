"""Learning curves: power-law fits with extrapolation intervals, and where two curves cross.

    fit = fit_power_law(n_train, test_loss_mean, sigma=test_loss_sem)   # L(n) = a n^-b + c
    fit.exponent, fit.exponent_stderr
    extrapolate(fit, [2 * n_max], seed=0)      # mean and 95% interval (parameter sampling)
    crossing_interval(x, curves_a_SX, curves_b_SX, seed=0)   # bootstrap over seeds

A crossing is where the sign of `a - b` changes between two consecutive x; its position is
linearly interpolated in log x (curves over data fractions or step budgets are log-spaced).
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import numpy as np


def power_law(x, a, b, c):
    """a * x^(-b) + c: the irreducible loss c plus a term decaying with exponent b."""
    return a * np.power(np.asarray(x, np.float64), -b) + c


class PowerLawFit(NamedTuple):
    """Fitted a, b (exponent), c (asymptote), their covariance and standard errors."""

    scale: float
    exponent: float
    asymptote: float
    covariance: np.ndarray
    scale_stderr: float
    exponent_stderr: float
    asymptote_stderr: float

    def predict(self, x) -> np.ndarray:
        return power_law(x, self.scale, self.exponent, self.asymptote)

    def to_dict(self) -> dict:
        return {"scale": self.scale, "exponent": self.exponent, "asymptote": self.asymptote,
                "scale_stderr": self.scale_stderr, "exponent_stderr": self.exponent_stderr,
                "asymptote_stderr": self.asymptote_stderr, "formula": "a * x^(-b) + c"}


def fit_power_law(x, y, *, sigma=None, max_exponent: float = 5.0) -> PowerLawFit:
    """`scipy.optimize.curve_fit` of `a x^-b + c` to (x, y); needs >= 4 points for a stderr.

    Args:
      x: positive sizes (training examples, steps).
      y: the curve (loss), one value per x.
      sigma: per-point standard errors (e.g. over seeds), or None.
      max_exponent: upper bound on b.
    """
    from scipy import optimize

    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if x.shape != y.shape or x.ndim != 1 or len(x) < 3:
        raise ValueError(f"x and y must be equal 1-D arrays of >= 3 points; got {x.shape}, "
                         f"{y.shape}")
    if np.any(x <= 0) or not np.all(np.isfinite(y)):
        raise ValueError("x must be positive and y finite for a power-law fit")
    if sigma is not None:
        sigma = np.asarray(sigma, np.float64)
        floor = max(1e-6, 1e-3 * float(np.ptp(y)))
        sigma = np.where(np.isfinite(sigma) & (sigma > floor), sigma, floor)
    order = np.argsort(x)
    c0 = float(y[order[-1]]) - 0.1 * abs(float(np.ptp(y))) - 1e-3
    b0 = 0.5
    a0 = max((float(y[order[0]]) - c0) * x[order[0]] ** b0, 1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optimize.OptimizeWarning)
        popt, pcov = optimize.curve_fit(
            power_law, x, y, p0=[a0, b0, c0], sigma=sigma, absolute_sigma=sigma is not None,
            bounds=([0.0, 0.0, -np.inf], [np.inf, max_exponent, np.inf]), maxfev=20000)
    pcov = np.asarray(pcov, np.float64)
    stderr = np.sqrt(np.where(np.diag(pcov) >= 0, np.diag(pcov), np.nan))
    return PowerLawFit(*(float(v) for v in popt), pcov, *(float(v) for v in stderr))


def extrapolate(fit: PowerLawFit, x_new, *, confidence: float = 0.95, num_samples: int = 2000,
                seed: int = 0) -> dict:
    """The fit at `x_new` with an interval from sampling (a, b, c) ~ N(popt, covariance).

    Returns {"x", "mean", "low", "high", "confidence"}; low/high are NaN when the covariance
    is undefined (too few points)."""
    x_new = np.atleast_1d(np.asarray(x_new, np.float64))
    mean = fit.predict(x_new)
    params = np.asarray([fit.scale, fit.exponent, fit.asymptote])
    if not np.all(np.isfinite(fit.covariance)):
        nan = np.full_like(mean, np.nan)
        return {"x": x_new.tolist(), "mean": mean.tolist(), "low": nan.tolist(),
                "high": nan.tolist(), "confidence": confidence}
    rng = np.random.default_rng(seed)
    samples = rng.multivariate_normal(params, fit.covariance, size=num_samples,
                                      check_valid="ignore")
    samples[:, 1] = np.clip(samples[:, 1], 0.0, None)
    values = samples[:, 0:1] * np.power(x_new[None], -samples[:, 1:2]) + samples[:, 2:3]
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail], axis=0)
    return {"x": x_new.tolist(), "mean": mean.tolist(), "low": low.tolist(),
            "high": high.tolist(), "confidence": confidence}


def find_crossings(x, y_a, y_b, *, log_x: bool = True) -> list[float]:
    """x positions where `y_a - y_b` changes sign (an exact tie at a point counts once)."""
    x = np.asarray(x, np.float64)
    diff = np.asarray(y_a, np.float64) - np.asarray(y_b, np.float64)
    if x.shape != diff.shape or x.ndim != 1:
        raise ValueError(f"x, y_a and y_b must be equal 1-D arrays; got {x.shape}, "
                         f"{np.shape(y_a)}, {np.shape(y_b)}")
    if np.any(np.diff(x) <= 0):
        raise ValueError("x must be strictly increasing")
    position = np.log(x) if log_x else x
    crossings = []
    for i in range(len(x) - 1):
        d0, d1 = diff[i], diff[i + 1]
        if not (np.isfinite(d0) and np.isfinite(d1)):
            continue
        if d0 == 0 and (i == 0 or diff[i - 1] != 0):
            crossings.append(float(x[i]))
        elif d0 * d1 < 0:
            t = d0 / (d0 - d1)
            at = position[i] + t * (position[i + 1] - position[i])
            crossings.append(float(math.exp(at) if log_x else at))
    if len(diff) and diff[-1] == 0 and (len(diff) == 1 or diff[-2] != 0):
        crossings.append(float(x[-1]))
    return crossings


def crossing_interval(x, curves_a_SX, curves_b_SX, *, confidence: float = 0.95,
                      num_resamples: int = 2000, seed: int = 0, log_x: bool = True) -> dict:
    """The first crossing of the seed-mean curves, with a bootstrap interval over seeds.

    Each resample draws seeds with replacement for each curve independently (the curves may
    come from different runs), averages, and records its first crossing. Returns
    {"crossing" (of the full means, None if none), "low", "high", "fraction_crossing" (of the
    resamples with a crossing; the interval is over those), "sign_before" ("a<b" | "a>b")}.
    """
    a = np.asarray(curves_a_SX, np.float64)
    b = np.asarray(curves_b_SX, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != len(x) or b.shape[1] != len(x):
        raise ValueError(f"curves must be (seeds, len(x)={len(x)}); got {a.shape}, {b.shape}")
    mean_a, mean_b = np.nanmean(a, axis=0), np.nanmean(b, axis=0)
    point = find_crossings(x, mean_a, mean_b, log_x=log_x)
    rng = np.random.default_rng(seed)
    found = []
    for _ in range(num_resamples):
        ra = a[rng.integers(0, len(a), len(a))].mean(axis=0)
        rb = b[rng.integers(0, len(b), len(b))].mean(axis=0)
        crossings = find_crossings(x, ra, rb, log_x=log_x)
        if crossings:
            found.append(crossings[0])
    tail = (1 - confidence) / 2 * 100
    low, high = (np.percentile(found, [tail, 100 - tail]) if found else (math.nan, math.nan))
    first = np.flatnonzero(np.isfinite(mean_a - mean_b))
    sign = None
    if first.size:
        sign = "a<b" if mean_a[first[0]] < mean_b[first[0]] else "a>b"
    return {"crossing": point[0] if point else None, "all_crossings": point,
            "low": float(low), "high": float(high), "confidence": confidence,
            "fraction_crossing": len(found) / num_resamples, "sign_before": sign,
            "num_seeds": [int(len(a)), int(len(b))]}


def subset_sizes(num_train: int, fractions) -> list[int]:
    """Rows used at each training-set fraction (at least 1)."""
    sizes = []
    for fraction in fractions:
        if not 0 < fraction <= 1:
            raise ValueError(f"data fractions must be in (0, 1]; got {fraction}")
        sizes.append(max(1, int(round(fraction * num_train))))
    return sizes
