"""Behavioural tests of a classifier (CheckList-style), each a pass rate over examples.

Every check takes `predict_fn(inputs) -> probs` (N, C) and a batch of inputs (N, ...):

    noise = perturbation_check(predict_fn, x, noise_scale=0.05, seed=0)
    shift = invariance_check(predict_fn, x, shift_signal(1), name="shift by 1")
    louder = directional_check(predict_fn, x, lambda x, rng: x * 1.2, target_class=3)
    noise.pass_rate, noise.passed, noise.failing_examples[:5]

- perturbation: small Gaussian input noise (`noise_scale` times the inputs' std) should not
  change the predicted class; pass rate = fraction of unchanged predictions, worst over trials.
- invariance: a transformation that should not change the label (a small shift of an mnist1d
  signal) should not change the predicted class.
- directional expectation: a change that should move the prediction one way moves the
  probability of `target_class` in that direction (by at least `min_change`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from experiments.evaluation.checks import check_choice, check_probs

DIRECTIONS = ("increase", "decrease")
Transform = Callable[[np.ndarray, np.random.Generator], np.ndarray]


class CheckResult(NamedTuple):
    """Outcome of one behavioural check."""

    name: str
    kind: str  # "perturbation", "invariance" or "directional"
    pass_rate: float
    threshold: float
    num_examples: int
    failing_examples: list[int]  # indices into the inputs

    @property
    def passed(self) -> bool:
        return self.pass_rate >= self.threshold

    def as_dict(self, max_failing: int = 20) -> dict:
        return {"name": self.name, "kind": self.kind, "pass_rate": self.pass_rate,
                "threshold": self.threshold, "passed": self.passed,
                "num_examples": self.num_examples, "num_failing": len(self.failing_examples),
                "failing_examples": self.failing_examples[:max_failing]}


def _predict(predict_fn, inputs, num_examples: int) -> np.ndarray:
    probs = check_probs(np.asarray(predict_fn(inputs)), name="predict_fn(inputs)")
    if probs.shape[0] != num_examples:
        raise ValueError(f"predict_fn returned {probs.shape[0]} rows for {num_examples} inputs")
    return probs


def _check_inputs(inputs) -> np.ndarray:
    inputs = np.asarray(inputs)
    if inputs.ndim < 1 or inputs.shape[0] == 0:
        raise ValueError(f"inputs must be a non-empty batch (N, ...); got shape {inputs.shape}")
    return inputs


def _result(name, kind, passes, threshold) -> CheckResult:
    return CheckResult(name, kind, float(np.mean(passes)), float(threshold), int(len(passes)),
                       np.flatnonzero(~passes).tolist())


def perturbation_check(predict_fn: Callable, inputs, *, noise_scale: float = 0.05,
                       num_trials: int = 3, threshold: float = 0.95, seed: int = 0,
                       name: str | None = None) -> CheckResult:
    """Fraction of examples whose predicted class survives every one of `num_trials` draws of
    Gaussian noise with std `noise_scale * std(inputs)`."""
    if noise_scale <= 0 or num_trials < 1:
        raise ValueError(f"noise_scale and num_trials must be positive; got {noise_scale}, "
                         f"{num_trials}")
    inputs = _check_inputs(inputs)
    rng = np.random.default_rng(seed)
    base = _predict(predict_fn, inputs, len(inputs)).argmax(axis=1)
    scale = noise_scale * float(np.std(inputs))
    passes = np.ones(len(inputs), dtype=bool)
    for _ in range(num_trials):
        noisy = inputs + rng.normal(scale=scale, size=inputs.shape).astype(inputs.dtype)
        passes &= _predict(predict_fn, noisy, len(inputs)).argmax(axis=1) == base
    return _result(name or f"gaussian noise {noise_scale:g} std", "perturbation", passes,
                   threshold)


def invariance_check(predict_fn: Callable, inputs, transform: Transform, *,
                     name: str = "invariance", threshold: float = 0.9,
                     seed: int = 0) -> CheckResult:
    """Fraction of examples whose predicted class `transform(inputs, rng)` leaves unchanged."""
    inputs = _check_inputs(inputs)
    transformed = np.asarray(transform(inputs, np.random.default_rng(seed)))
    if transformed.shape != inputs.shape:
        raise ValueError(f"transform changed the input shape {inputs.shape} -> "
                         f"{transformed.shape}")
    before = _predict(predict_fn, inputs, len(inputs)).argmax(axis=1)
    after = _predict(predict_fn, transformed, len(inputs)).argmax(axis=1)
    return _result(name, "invariance", before == after, threshold)


def directional_check(predict_fn: Callable, inputs, transform: Transform, *, target_class: int,
                      direction: str = "increase", min_change: float = 0.0,
                      name: str = "directional", threshold: float = 0.9,
                      seed: int = 0) -> CheckResult:
    """Fraction of examples where `transform` moves P(target_class) in `direction` by more
    than `min_change`."""
    check_choice(direction, DIRECTIONS, name="direction")
    inputs = _check_inputs(inputs)
    transformed = np.asarray(transform(inputs, np.random.default_rng(seed)))
    before = _predict(predict_fn, inputs, len(inputs))
    if not 0 <= target_class < before.shape[1]:
        raise ValueError(f"target_class must be in [0, {before.shape[1]}); got {target_class}")
    after = _predict(predict_fn, transformed, len(inputs))
    change = after[:, target_class] - before[:, target_class]
    passes = change > min_change if direction == "increase" else change < -min_change
    return _result(name, "directional", passes, threshold)


def shift_signal(shift: int, *, axis: int = 1) -> Transform:
    """A transform rolling each signal by `shift` positions along `axis` (mnist1d: (N, 40, 1))."""

    def transform(inputs, rng):
        return np.roll(inputs, shift, axis=axis)

    return transform


def default_checks(predict_fn: Callable, inputs, *, signal: bool = False, seed: int = 0) -> dict:
    """The standard suite as JSON: noise at two scales, and for 1-D signals shifts by +-1."""
    results = [perturbation_check(predict_fn, inputs, noise_scale=scale, seed=seed)
               for scale in (0.01, 0.1)]
    if signal:
        results += [invariance_check(predict_fn, inputs, shift_signal(s), name=f"shift {s:+d}",
                                     seed=seed) for s in (-1, 1)]
    return {result.name: result.as_dict() for result in results}
