"""Numbers the benchmark reports, computed on host NumPy curves: pure functions, no JAX.

Optimization protocol. Speedup (as VeLO reports it): the target is the reference's (tuned Adam's,
or Adam's at 1e-3) final training loss; each optimizer's "steps to target" is the first step at
which its training-loss curve is at or below the target, and speedup = the reference's steps to
target / the optimizer's steps to target. The reference's own steps are usually, but not always,
its whole budget (a curve that dips below its final value earlier reaches it earlier). An
optimizer that never reaches the target within the budget has steps = None and speedup = None:
we do not extrapolate (aggregates count it as speedup 0).

The curves compared are per-step minibatch training losses averaged over seeds (seeds are
paired: the same seed gives every optimizer the same batches), then smoothed with a trailing
mean of `window` steps so one lucky minibatch does not count as reaching the target.

    target = final_value(smooth(adam_train_loss_S.mean(0), 20))
    speedup_of(adam_curve, lopt_curve, window=20)   # -> SpeedupResult(...)

Generalization protocol (`eval_speedup_of`): the target is the reference's BEST validation loss
over its evaluations; steps count training steps to the first evaluation at or below it (the
evaluation grid, `eval_every`, is the resolution).

Normalised loss (`normalized_loss`): (loss - ref_final) / (ref_initial - ref_final), 0 = the
reference's final loss, 1 = the loss at initialisation, below 0 = better than the reference.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np


def smooth(curve: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over the last `window` values (fewer at the start); NaN/inf propagate."""
    curve = np.asarray(curve, dtype=np.float64)
    if curve.ndim != 1:
        raise ValueError(f"expected a 1-D curve, got shape {curve.shape}")
    if window <= 0:
        raise ValueError(f"window must be positive, got {window}")
    # Direct window means (not differences of a cumulative sum): exact for window 1, and a NaN
    # only poisons the windows that contain it.
    padded = np.concatenate([np.full(window - 1, np.nan), curve])
    windows = np.lib.stride_tricks.sliding_window_view(padded, window)
    counts = np.minimum(np.arange(1, curve.size + 1), window)
    sums = np.where(np.isnan(windows) & (np.arange(window) < window - counts[:, None]), 0.0,
                    windows).sum(axis=1)
    return sums / counts


def steps_to_reach(curve: np.ndarray, target: float) -> int | None:
    """1-based count of steps until `curve` first is <= `target`; None if never (or target NaN).

    `curve[t]` is the loss at step t, so reaching it at index t took t + 1 loss evaluations.
    """
    curve = np.asarray(curve, dtype=np.float64)
    if not math.isfinite(target):
        return None
    reached = np.flatnonzero(np.isfinite(curve) & (curve <= target))
    return int(reached[0]) + 1 if reached.size else None


class SpeedupResult(NamedTuple):
    """target: the reference's final smoothed training loss (or best validation loss);
    steps: None when never reached."""

    target: float
    reference_steps: int | None
    steps: int | None
    speedup: float | None


def speedup_of(adam_curve: np.ndarray, curve: np.ndarray, window: int) -> SpeedupResult:
    """Speedup of `curve` over `adam_curve` (1-D per-step training losses, same budget)."""
    adam_smooth = smooth(adam_curve, window)
    target = float(adam_smooth[-1])
    adam_steps = steps_to_reach(adam_smooth, target)
    steps = steps_to_reach(smooth(curve, window), target)
    return SpeedupResult(target, adam_steps, steps, _ratio(adam_steps, steps))


def eval_steps_to_reach(curve, eval_steps, target: float) -> int | None:
    """The training step of the first evaluation at which `curve` is <= `target` (None: never)."""
    curve = np.asarray(curve, dtype=np.float64)
    if not math.isfinite(target):
        return None
    reached = np.flatnonzero(np.isfinite(curve) & (curve <= target))
    return int(np.asarray(eval_steps)[reached[0]]) if reached.size else None


def _ratio(reference_steps: int | None, steps: int | None) -> float | None:
    if reference_steps is None or steps is None:
        return None
    if steps == 0:  # both at initialisation (paired seeds start from the same parameters)
        return 1.0 if reference_steps == 0 else None
    return reference_steps / steps


def eval_speedup_of(reference_valid, valid, eval_steps) -> SpeedupResult:
    """Speedup to the reference's best validation loss, on 1-D evaluation curves."""
    reference_valid = np.asarray(reference_valid, dtype=np.float64)
    finite = reference_valid[np.isfinite(reference_valid)]
    target = float(finite.min()) if finite.size else math.nan
    reference_steps = eval_steps_to_reach(reference_valid, eval_steps, target)
    steps = eval_steps_to_reach(valid, eval_steps, target)
    return SpeedupResult(target, reference_steps, steps, _ratio(reference_steps, steps))


def normalized_loss(loss: float, reference_initial: float, reference_final: float) -> float:
    """(loss - ref_final) / (ref_initial - ref_final); +inf for a non-finite loss, NaN when the
    reference did not improve on its initial loss (no scale to normalise by)."""
    if not math.isfinite(loss):
        return math.inf
    gap = reference_initial - reference_final
    if not (math.isfinite(gap) and gap > 0):
        return math.nan
    return (loss - reference_final) / gap


def summarize(values) -> dict:
    """Mean / std / min / max over the finite entries, and how many there were.

    Non-finite entries (diverged seeds) are counted, never averaged in; all statistics are None
    when no entry is finite.
    """
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    finite = values[np.isfinite(values)]
    stats = {"n": int(values.size), "n_finite": int(finite.size)}
    if finite.size == 0:
        return stats | {"mean": None, "std": None, "min": None, "max": None}
    return stats | {
        "mean": float(finite.mean()),
        "std": float(finite.std()),
        "min": float(finite.min()),
        "max": float(finite.max()),
    }


def diverged(train_loss: np.ndarray, window: int) -> bool:
    """Diverged: any loss is non-finite, or the smoothed final loss exceeds the initial loss."""
    train_loss = np.asarray(train_loss, dtype=np.float64)
    if not np.all(np.isfinite(train_loss)):
        return True
    return bool(smooth(train_loss, window)[-1] > train_loss[0])


def finite_or_none(x) -> float | None:
    """A JSON-safe float: None for NaN / inf (JSON has neither)."""
    x = float(x)
    return x if math.isfinite(x) else None
