"""Performance estimation of a candidate architecture: cheap proxies for its trained quality.

    estimator = make_estimator("low_fidelity", num_steps=200, eval_every=50)
    estimator = make_estimator("extrapolation", num_steps=200, eval_every=25, target_steps=2000)
    outcome = estimator(task, report)       # {"value": valid score, "cost_steps": ..., ...}

- "low_fidelity": train for a short `num_steps` (Adam at a fixed learning rate) and score the
  validation loss there (mean over seeds of the last `last_k` evaluations).
- "extrapolation": train as briefly, fit a power law `L(t) = c + a * t**(-b)` to the
  validation curve (`scipy.optimize.curve_fit`) and score its prediction at `target_steps`,
  the budget the architecture will finally be trained for; the fit falls back to the last
  observed loss when it fails or the curve has fewer than 3 points.

Both read only "train" and "valid", and report each evaluation to the pruner.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments.automl.objectives import validation_score
from learned_opt import training as train_loop

ESTIMATORS = ("low_fidelity", "extrapolation")


def power_law(t, a, b, c):
    """c + a * t**(-b): a learning curve that decays to `c`."""
    return c + a * np.power(t, -b)


def fit_power_law(steps: Sequence[float], losses: Sequence[float]) -> tuple[float, float, float]:
    """(a, b, c) of the least-squares power law through (steps, losses), steps > 0.

    Raises:
      ValueError: fewer than 3 finite points with positive steps, or the fit did not converge.
    """
    from scipy.optimize import curve_fit

    t = np.asarray(steps, dtype=np.float64)
    y = np.asarray(losses, dtype=np.float64)
    keep = (t > 0) & np.isfinite(y)
    t, y = t[keep], y[keep]
    if t.size < 3:
        raise ValueError(f"a power-law fit needs >= 3 finite points at steps > 0, got {t.size}")
    guess = (max(y[0] - y[-1], 1e-3) * t[0] ** 0.5, 0.5, float(y.min()) * 0.9)
    try:
        params, _ = curve_fit(power_law, t, y, p0=guess, maxfev=20000,
                              bounds=([0.0, 1e-3, -np.inf], [np.inf, 4.0, np.inf]))
    except (RuntimeError, ValueError) as error:
        raise ValueError(f"power-law fit failed: {error}") from None
    return tuple(float(p) for p in params)


def extrapolate(steps: Sequence[float], losses: Sequence[float], target_step: float) -> float:
    """The power law's prediction at `target_step`; the last finite loss if the fit fails."""
    try:
        return float(power_law(target_step, *fit_power_law(steps, losses)))
    except ValueError:
        finite = [v for v in losses if math.isfinite(v)]
        return float(finite[-1]) if finite else math.inf


@dataclasses.dataclass(frozen=True)
class Estimator:
    """Short Adam training of a task; see the module docstring for the two scores."""

    kind: str = "low_fidelity"
    num_steps: int = 200
    eval_every: int = 50
    target_steps: int = 2000
    learning_rate: float = 3e-3
    seeds: tuple[int, ...] = (0,)
    last_k: int = 1
    eval_batches: int = 2

    def __post_init__(self):
        if self.kind not in ESTIMATORS:
            raise ValueError(f"unknown estimator {self.kind!r}; valid estimators: {ESTIMATORS}")
        if self.kind == "extrapolation" and self.num_steps // self.eval_every < 3:
            raise ValueError(f"extrapolation needs >= 3 evaluations after step 0: num_steps="
                             f"{self.num_steps}, eval_every={self.eval_every}")
        if self.target_steps < self.num_steps:
            raise ValueError(f"target_steps={self.target_steps} below num_steps={self.num_steps}")

    def curves(self, task) -> train_loop.Curves:
        run = train_loop.make_run_fn(task, lambda lr: optax.adam(lr), num_steps=self.num_steps,
                                     eval_every=self.eval_every, eval_splits=("valid",),
                                     eval_batches=self.eval_batches, full_split_eval=True)
        return jax.device_get(run(jnp.float32(self.learning_rate),
                                  train_loop.seed_keys(list(self.seeds))))

    def __call__(self, task, report: Callable[[int, float], None]) -> dict:
        curves = self.curves(task)
        valid = np.asarray(curves.evals["valid"]["loss"], dtype=np.float64).mean(axis=0)
        for index in range(1, len(valid)):
            report(index, float(valid[index]))
        observed = validation_score(curves, self.last_k)
        value = observed
        if self.kind == "extrapolation" and math.isfinite(observed):
            value = extrapolate(np.asarray(curves.eval_steps), valid, self.target_steps)
        return {"value": value, "observed_valid": observed,
                "cost_steps": self.num_steps * len(self.seeds)}


def make_estimator(kind: str, **kwargs) -> Estimator:
    """An `Estimator` of `kind` in ESTIMATORS (ValueError otherwise)."""
    return Estimator(kind=kind, **kwargs)
