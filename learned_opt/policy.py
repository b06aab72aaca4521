"""The numeric policy every learned optimizer shares, applied around an architecture's
`leaf_state` / `leaf_delta` for one parameter tensor:

* **Bounded updates**: every entry of every update is clipped to `[-max_update, max_update]`
  (constructor knob, default 0.1), so no single step can move a parameter further than that.
* **Parameter-scale-aware step size**: each tensor's update is multiplied by
  `max(rms(param), param_scale_floor) ** theta["param_scale_exponent"]`. The exponent is a
  meta-parameter initialised at 0 (scale-free, like Adam); meta-training can move it towards 1
  (LARS/LAMB-like steps relative to the parameter's size).
* **Learning rate** (optional input): `optimizer(theta, learning_rate=lr)` (a float or an
  optax schedule) multiplies each update by `lr(step) / nominal_step_size` before the bound,
  so every architecture's step size is the user's to tune or schedule, like Adam's; without
  it the update is the one meta-training produced.
* **Weight decay** (optional input): `optimizer(theta, weight_decay=wd)` adds the decoupled
  term `-wd * lr * param` (AdamW's convention; lr = nominal_step_size without a learning
  rate) before clipping.
* **Non-finite gradients**: an entry whose gradient is NaN/Inf gets a zero update and its
  per-parameter state entries stay unchanged; state that is shared by a whole tensor (Adafactor
  rows/columns, per-tensor LSTMs: `per_tensor_fields`) is left unchanged for a tensor with any
  non-finite entry. The step counter still advances. So NaN/Inf never reaches params or state.
* **Dtypes**: params and grads may be float32, bfloat16 or float16; all arithmetic runs in
  float32, state is float32 (an EMA with decay 0.999 stalls in bfloat16), updates come back in
  each param's dtype.

    update, new_leaf = safe_leaf_step(lopt, theta, g, p, leaf, ctx, weight_decay=0.0)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from learned_opt import features as F

if TYPE_CHECKING:
    from learned_opt.base import LearnedOptimizer, StepContext

# A learning rate: a positive float or an optax schedule (0-based update index -> float).
LearningRate = float | Callable[[jax.Array], jax.Array]


def learning_rate_fn(learning_rate: LearningRate | None) -> Callable | None:
    """`learning_rate` as a function of the 0-based update index (None stays None).

    A concrete float must be finite and positive; a schedule's value at step 0 finite and
    non-negative (a warmup from 0, e.g. `optax.warmup_cosine_decay_schedule(0.0, ...)`, is
    fine); traced values (e.g. a learning rate vmapped over tuning trials) are not checked.

    Raises:
      ValueError: learning_rate <= 0, non-finite, a schedule starting below 0, or neither a
        number nor a callable.
    """
    if learning_rate is None:
        return None
    if callable(learning_rate):
        _check_learning_rate(learning_rate(0), "learning_rate(0) of the schedule",
                             allow_zero=True)
        return lambda step: jnp.asarray(learning_rate(step), jnp.float32)
    if isinstance(learning_rate, bool | str) or not (
            isinstance(learning_rate, int | float) or hasattr(learning_rate, "dtype")):
        raise ValueError(f"learning_rate must be a positive float or an optax schedule, got "
                         f"{learning_rate!r}")
    _check_learning_rate(learning_rate, "learning_rate")
    value = jnp.asarray(learning_rate, jnp.float32)
    return lambda step: value


def _check_learning_rate(value, what: str, allow_zero: bool = False) -> None:
    try:
        concrete = float(np.asarray(value))
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError,
            TypeError):
        return  # traced: checked by whoever made it
    if not math.isfinite(concrete) or concrete < 0 or (concrete == 0 and not allow_zero):
        kind = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{what} must be a finite {kind} number, got {concrete!r}")


# Learning-rate shapes over a known horizon (`horizon_schedule`).
HORIZON_SCHEDULES = ("constant", "warmup_cosine")


def horizon_schedule(name: str, peak: Any, horizon: Any, warmup_fraction: float = 0.05
                     ) -> Callable[[jax.Array], jax.Array]:
    """A learning rate over a run of `horizon` updates, as a function of the 0-based update
    index: `peak` constant, or (warmup_cosine) a linear warmup from 0 over `warmup_fraction`
    of the horizon to `peak`, then a cosine to 0 at `horizon`, which is how the benchmark runs
    a tuned optimizer over its whole budget. It is optax's `warmup_cosine_decay_schedule` (with
    `round(warmup_fraction * horizon)`, at least 1, warmup steps), written so that `peak` and
    `horizon` may be traced: each task of a meta-training population has its own horizon.

        rate = horizon_schedule("warmup_cosine", 3e-3, 1000)   # rate(0) == 0, rate(50) == 3e-3

    Raises:
      ValueError: an unknown `name`.
    """
    if name not in HORIZON_SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; valid choices: {list(HORIZON_SCHEDULES)}")
    if name == "constant":
        return lambda count: peak
    horizon = jnp.asarray(horizon, jnp.float32)
    warmup = jnp.maximum(1.0, jnp.round(warmup_fraction * horizon))

    def rate(count):
        count = jnp.asarray(count, jnp.float32)
        decay = jnp.clip((count - warmup) / jnp.maximum(horizon - warmup, 1.0), 0.0, 1.0)
        cosine = 0.5 * (1.0 + jnp.cos(jnp.pi * decay))
        return peak * jnp.where(count < warmup, count / warmup, cosine)

    return rate


def safe_leaf_step(lopt: LearnedOptimizer, theta: dict[str, Any], g_raw: jax.Array,
                   p_raw: jax.Array, leaf: NamedTuple, ctx: StepContext,
                   weight_decay: float) -> tuple[jax.Array, NamedTuple]:
    """(update, new leaf state) of one tensor: `lopt.leaf_state` / `lopt.leaf_delta` plus the
    shared policies: finite mask, scale, weight decay, clip, cast.

    `ctx` is completed here with the tensor's gradient statistics (`ctx.grad`).

    Written for memory traffic, which bounds every architecture's update on CPU:
      * the per-entry state is computed, masked (non-finite gradient: entry unchanged) and
        written in one pass, then an optimization barrier makes `leaf_delta` read it back
        instead of recomputing it from the old state. Without the barrier XLA fuses the
        state update into both the state's and the update's loops, the old state stays
        live after the new one is written, and XLA copies every state buffer (measured:
        3 extra passes per state field, LearnedAdam 2x Adam);
      * the all-finite flag (needed only for per-tensor fields) and the parameter RMS (only
        when `param_scale_exponent` is not a trace-time zero) are reductions that XLA
        drops when unused;
      * `g`, `p` are converted to float32 inside the fusions, never materialized.
    """
    if g_raw.size == 0:
        return jnp.zeros_like(p_raw), leaf
    finite = jnp.isfinite(g_raw)
    g = jnp.where(finite, F.as_f32(g_raw), 0.0)
    p = F.as_f32(p_raw)
    stats = F.grad_stats(g_raw)
    ctx = ctx._replace(grad=stats)
    new_leaf, aux = lopt.leaf_state(theta, g, p, leaf, ctx)
    entry_fields = [i for i, old in enumerate(leaf)
                    if leaf._fields[i] not in lopt.per_tensor_fields
                    and old.ndim in (g.ndim, g.ndim + 1)
                    and old.shape[old.ndim - g.ndim:] == g.shape]
    kept = list(new_leaf)
    if len(entry_fields) < len(kept):
        all_finite = stats.all_finite
        for i, (old, new) in enumerate(zip(leaf, new_leaf, strict=True)):
            if i not in entry_fields:
                kept[i] = jnp.where(all_finite, new, old)
    entry_fields = [i for i in entry_fields if leaf._fields[i] not in lopt.premasked_fields]
    for i in entry_fields:
        kept[i] = F.keep_finite(finite, new_leaf[i], leaf[i], materialize=False)
    # The raw gradient goes through the barrier too, and `leaf_delta` masks its own copy:
    # one masked gradient shared by the state's and the update's loops is written out by
    # XLA and read back by each (measured: MLPLOpt 16 B/param more traffic); masked again
    # behind the barrier, each loop recomputes it from `g_raw` instead.
    written, g_raw = jax.lax.optimization_barrier(
        (tuple(kept[i] for i in entry_fields), g_raw))
    finite = jnp.isfinite(g_raw)
    g = jnp.where(finite, F.as_f32(g_raw), 0.0)
    for_delta = list(new_leaf)  # per-tensor fields: the new values, as before the mask
    for i, value in zip(entry_fields, written, strict=True):
        for_delta[i] = kept[i] = value
    delta = lopt.leaf_delta(theta, g, p, type(leaf)(*for_delta), aux, ctx)
    exponent = theta["param_scale_exponent"]
    if lopt.uses_param_scale and not is_concrete_zero(exponent):
        delta = delta * jnp.power(F.tensor_rms(p, lopt.param_scale_floor), exponent)
    if ctx.lr_scale is not None:
        delta = delta * ctx.lr_scale
    if weight_decay:
        step_size = lopt.nominal_step_size(theta)
        if ctx.lr_scale is not None:
            step_size = step_size * ctx.lr_scale
        delta = delta - weight_decay * step_size * p
    delta = jnp.clip(delta, -lopt.max_update, lopt.max_update)
    update = jnp.where(finite, delta, 0.0).astype(p_raw.dtype)
    return update, type(leaf)(*kept)


def is_concrete_zero(x) -> bool:
    """Whether `x` is a concrete (not traced) zero, so a policy scaled by it can be skipped."""
    try:
        return bool(np.all(np.asarray(x) == 0))
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return False
