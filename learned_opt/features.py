"""The one feature library every learned optimizer is built from.

All functions are pure, elementwise or reduce along named axes only, so under sharding XLA keeps
per-parameter work local (a per-tensor statistic becomes a partial reduction plus an all-reduce;
no tensor is ever gathered). Everything is computed in float32 whatever the parameter dtype.

Conventions:
  * A leaf's accumulators at several decays are stacked on a LEADING axis: momenta of a `(R, C)`
    parameter at decays `(0.5, 0.9, 0.99)` have shape `(3, R, C)`, so each decay's slice is
    one contiguous array like the parameter. (With the decays on a trailing axis, `m[..., k]`
    is a stride-K read that XLA's CPU loops cannot vectorize: the MLP architectures' update
    loops ran ~2x slower.) The same holds for other per-entry stacks (an LSTM's hidden units).
  * Per-tensor ("global") features are small 1-D arrays; an architecture folds them into the bias
    of its per-parameter network's first layer, so they cost nothing per parameter.

    decays = jnp.array([0.5, 0.9, 0.99])
    m = update_momenta(m, g, decays)                     # (K, ...)
    v = update_second_moment(v, g, 0.999)                # (...)
    x = m * rsqrt_eps(v)                                 # momenta normalized by the second moment
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

# Adafactor's epsilon on squared gradients: keeps rows/columns of all-zero gradients positive.
FACTORED_EPS = 1e-30
DEFAULT_TIMESCALES = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0)
NUM_SHAPE_FEATURES = 4


def as_f32(x: jax.Array) -> jax.Array:
    """`x` in float32 (accumulators and features never run in half precision)."""
    return jnp.asarray(x, jnp.float32)


# sqrt has an infinite derivative at 0; meta-gradients (TBPTT) flow through second moments and
# norms that are exactly 0 for untouched entries (zero-initialized biases, dead units), so every
# sqrt here goes through `safe_sqrt`, whose gradient is 0 below a tiny floor instead of inf * 0.
_SQRT_FLOOR = 1e-30


def safe_sqrt(x: jax.Array) -> jax.Array:
    """`sqrt(x)` for x >= 0 with a finite gradient at 0 (values below 1e-30 read as 1e-30)."""
    return jnp.sqrt(jnp.maximum(x, _SQRT_FLOOR))


def rsqrt_eps(v: jax.Array, eps: float | jax.Array = 1e-8) -> jax.Array:
    """`1 / (sqrt(v) + eps)`: the second-moment normalizer Adam uses."""
    return 1.0 / (safe_sqrt(v) + eps)


def stacked(values: jax.Array, ndim: int) -> jax.Array:
    """A (K,) vector shaped (K, 1, ..., 1) to scale a stack of K arrays of rank `ndim`."""
    values = jnp.asarray(values)
    return jnp.reshape(values, values.shape + (1,) * ndim)


def update_momenta(m: jax.Array, g: jax.Array, decays: jax.Array) -> jax.Array:
    """Exponential moving averages of `g` at every decay at once: `m` has shape (K,) + g.shape."""
    decays = stacked(decays, g.ndim)
    return decays * m + (1.0 - decays) * g


def update_second_moment(v: jax.Array, g: jax.Array, decay: float | jax.Array) -> jax.Array:
    """EMA of `g**2`; `v` has `g`'s shape, or (K,) + g.shape when `decay` is a (K,) vector."""
    if jnp.ndim(decay) == 1:
        decay = stacked(decay, g.ndim)
    return decay * v + (1.0 - decay) * jnp.square(g)


def bias_correction(decays: jax.Array, count: jax.Array) -> jax.Array:
    """`1 / (1 - decay**count)` for an EMA started at zero (count >= 1)."""
    return 1.0 / (1.0 - jnp.power(decays, count.astype(jnp.float32)))


def tensor_rms(x: jax.Array, floor: float = 0.0) -> jax.Array:
    """Root mean square of a whole tensor (a per-tensor scalar); `floor` for zero-size/zero x."""
    if x.size == 0:
        return jnp.asarray(max(floor, 1.0), jnp.float32)
    return jnp.maximum(safe_sqrt(jnp.mean(jnp.square(as_f32(x)))), floor)


# ---------------------------------------------------------------------------------------------
# Per-tensor gradient statistics.


class GradStats(NamedTuple):
    """Reductions of one leaf's gradient that the shared policies and the architectures need.

    Every sum is over the finite entries (NaN/Inf entries count as zero).

    finite: the mask `isfinite(g)` (g's shape).
    all_finite: bool scalar, no NaN/Inf entry in the raw gradient.
    sq_sum_rows: sum over the last axis of g**2: shape g.shape[:-1] (g**2 for a scalar leaf).
    sq_sum: sum of g**2 over the whole tensor (a scalar).
    nonzero: the number of non-zero entries (a float32 scalar).
    sq_sum_cols: sum over the second-last axis of g**2 (shape g.shape[:-2] + g.shape[-1:]) for
      a leaf with ndim >= 2, else None.
    """

    finite: jax.Array
    all_finite: jax.Array
    sq_sum_rows: jax.Array
    sq_sum: jax.Array
    nonzero: jax.Array
    sq_sum_cols: jax.Array | None = None


def _square_sums(g: jax.Array, mask: jax.Array | None) -> tuple:
    """(row sums, column sums or None, total, non-zero count) of g**2 (over `mask` if given)."""
    if mask is not None:
        g = jnp.where(mask, g, 0.0)
    sq_rows = jnp.sum(g * g, axis=-1)
    sq_cols = None
    if is_factored(g.shape):
        # The barrier keeps XLA from sharing g * g between the row and the column sums: shared,
        # it is written out for both to read (an extra write and two reads of the tensor).
        g_cols = jax.lax.optimization_barrier(g)
        sq_cols = jnp.sum(g_cols * g_cols, axis=-2)
    # The total as its own full reduction, not the sum of the row sums: an architecture that
    # needs only the total (MLPLOpt's gradient RMS) then never computes per-row sums (under
    # sharding: a scalar all-reduce, not one of the row sums).
    return sq_rows, sq_cols, jnp.sum(g * g), jnp.sum((g != 0).astype(jnp.float32))


def grad_stats(g_raw: jax.Array) -> GradStats:
    """`GradStats` of a raw gradient leaf (any float dtype, possibly with NaN/Inf entries).

    Every statistic is a plain sum whose elementwise input XLA computes inside the reduction
    (on CPU a library kernel that reads `g` once at memory speed; measured ~4x faster than one
    variadic reduction computing several statistics in one loop), and XLA drops unused ones.
    The sums are taken of the raw gradient and, only when it has a non-finite entry (a
    `lax.cond`), again with the mask.
    """
    finite = jnp.isfinite(g_raw)
    g = as_f32(g_raw)
    if g.ndim == 0:
        masked = jnp.where(finite, g, 0.0)
        return GradStats(finite, finite, jnp.square(masked), jnp.square(masked),
                         (masked != 0).astype(jnp.float32))
    # g - g is NaN at a NaN or Inf entry and exactly 0 elsewhere: one plain sum tells whether
    # all are finite (XLA does not simplify x - x for floats, which would be wrong for them).
    # (Not g * 0.0: XLA shares that zero with other selects, and writes it out full-size.)
    all_finite = jnp.isfinite(jnp.sum(g - g))
    raw = _square_sums(g, None)
    sums = jax.lax.cond(all_finite, lambda: raw,
                        lambda: _square_sums(as_f32(g_raw), jnp.isfinite(g_raw)))
    sq_rows, sq_cols, sq_sum, nonzero = sums
    return GradStats(finite, all_finite, sq_rows, sq_sum, nonzero, sq_cols)


def keep_finite(finite: jax.Array, new: jax.Array, old: jax.Array, *,
                materialize: bool = True) -> jax.Array:
    """`new` where the gradient entry is finite, else `old` (per-entry state, shape g.shape or
    (K,) + g.shape); with `materialize`, behind an optimization barrier, so that later reads
    load the written array instead of recomputing `new` from the old state (which would keep
    the old state live and make XLA copy it)."""
    kept = jnp.where(finite, new, old)  # a leading stack axis broadcasts
    return jax.lax.optimization_barrier(kept) if materialize else kept


def grad_rms(stats: GradStats, size: int, floor: float = 0.0) -> jax.Array:
    """Root mean square of the whole gradient's finite entries from its `GradStats` (as
    `tensor_rms(g, floor)` with non-finite entries zeroed)."""
    return jnp.maximum(safe_sqrt(stats.sq_sum / size), floor)


# ---------------------------------------------------------------------------------------------
# Adafactor factored second moments.


class Factored(NamedTuple):
    """Factored second moments of one leaf at K decays (stacked on a leading axis).

    For a leaf with ndim >= 2 and shape (..., R, C): `row` is (K, ..., R) (mean over columns of
    g**2), `col` is (K, ..., C). Smaller leaves (vectors, scalars) are not factored: `row` holds
    the full accumulator ((K,) + shape) and `col` is an unused (1,) placeholder (orbax cannot
    save zero-size arrays).
    """

    row: jax.Array
    col: jax.Array


def is_factored(shape: Sequence[int]) -> bool:
    """Whether a leaf of this shape gets row/column statistics (ndim >= 2, non-empty)."""
    return len(shape) >= 2 and int(np.prod(shape)) > 0


def init_factored(p: jax.Array, num_decays: int) -> Factored:
    """Zero factored accumulators for leaf `p` (layout in `Factored`)."""
    zeros = jnp.zeros_like(p, jnp.float32)
    if is_factored(p.shape):
        row = jnp.broadcast_to(jnp.mean(zeros, axis=-1), (num_decays,) + p.shape[:-1])
        col = jnp.broadcast_to(jnp.mean(zeros, axis=-2), (num_decays,) + p.shape[:-2]
                               + p.shape[-1:])
        return Factored(row, col)
    return Factored(jnp.broadcast_to(zeros, (num_decays,) + p.shape), jnp.zeros((1,), jnp.float32))


def update_factored(fac: Factored, g: jax.Array, decays: jax.Array,
                    stats: GradStats) -> Factored:
    """One Adafactor accumulation step at every decay (see `Factored` for the layout).

    `stats` (`grad_stats` of the raw gradient) supplies the row and column sums of g**2, so the
    gradient is not read again for them.
    """
    g2 = jnp.square(g) + FACTORED_EPS
    if is_factored(g.shape):
        row_mean = stats.sq_sum_rows / g.shape[-1] + FACTORED_EPS
        col_mean = stats.sq_sum_cols / g.shape[-2] + FACTORED_EPS
        d = stacked(decays, g.ndim - 1)
        return Factored(d * fac.row + (1.0 - d) * row_mean, d * fac.col + (1.0 - d) * col_mean)
    d = stacked(decays, g.ndim)
    return Factored(d * fac.row + (1.0 - d) * g2, fac.col)


def factored_rsqrt(fac: Factored, shape: Sequence[int]) -> jax.Array:
    """`1/sqrt(v_hat)` with shape (K,) + shape, where v_hat = row * col / mean(row) (Adafactor).

    Written as a product of a per-row and a per-column factor, so the full-size result is one
    broadcasted multiply that XLA fuses into its consumer.
    """
    if is_factored(shape):
        row_mean = jnp.mean(fac.row, axis=-1, keepdims=True)         # (K, ..., 1)
        row_factor = jax.lax.rsqrt(fac.row / row_mean)                 # (K, ..., R)
        col_factor = jax.lax.rsqrt(fac.col)                            # (K, ..., C)
        return row_factor[..., :, None] * col_factor[..., None, :]
    return jax.lax.rsqrt(fac.row + FACTORED_EPS)


# ---------------------------------------------------------------------------------------------
# Per-tensor (global) features.


def time_features(count: jax.Array, timescales: Sequence[float] = DEFAULT_TIMESCALES) -> jax.Array:
    """`tanh(count / timescale)` for each timescale: a (len(timescales),) float32 vector."""
    return jnp.tanh(count.astype(jnp.float32) / jnp.asarray(timescales, jnp.float32))


NUM_PROGRESS_FEATURES = 4


def progress_features(count: jax.Array, num_steps: int | None) -> jax.Array:
    """Training-progress features (NUM_PROGRESS_FEATURES,): fraction done and tanh transforms.

    With `num_steps=None` (unknown horizon) all entries are zero, so one network serves both.
    """
    if num_steps is None:
        return jnp.zeros((NUM_PROGRESS_FEATURES,), jnp.float32)
    frac = count.astype(jnp.float32) / float(num_steps)
    return jnp.stack([frac, jnp.tanh(3.0 * frac), jnp.tanh(10.0 * frac),
                      jnp.tanh(10.0 * (1.0 - frac))])


def shape_features(shape: Sequence[int]) -> jax.Array:
    """Static tensor-shape features (NUM_SHAPE_FEATURES,): log size, ndim, log fan-in/fan-out.

    Scaled to be O(1) for tensors up to ~1e8 entries.
    """
    shape = tuple(int(s) for s in shape)
    size = int(np.prod(shape)) if shape else 1
    fan_in = shape[-2] if len(shape) >= 2 else 1
    fan_out = shape[-1] if shape else 1
    values = [np.log1p(size) / 10.0, len(shape) / 4.0, np.log1p(fan_in) / 10.0,
              np.log1p(fan_out) / 10.0]
    return jnp.asarray(values, jnp.float32)


def loss_features(value: jax.Array, loss_ema: jax.Array) -> jax.Array:
    """Scale-free loss features from the current loss and its EMAs at K decays: (2K,) in (-1, 1).

    Relative change of the loss against each EMA, and the sign-preserving log scale of the EMAs.
    """
    rel = (value - loss_ema) / (jnp.abs(loss_ema) + 1e-8)
    return jnp.concatenate([jnp.tanh(rel), jnp.tanh(jnp.sign(loss_ema) * jnp.log1p(
        jnp.abs(loss_ema)) / 5.0)])
