"""Orthogonalised matrix updates (as in Muon), for learned optimizers that apply them.

The Newton-Schulz iteration is `optax.contrib` Muon's quintic iteration with its default
coefficients and Frobenius pre-normalisation, written here with its first step factored
through the Gram matrix (see `newton_schulz`: the same function, tested against optax's). The
module also decides which tensors count as matrices and how a tensor of higher rank is viewed
as one:

* a tensor of rank >= 2 is the matrix `(prod(shape[:-1]), shape[-1])`: the last axis is the
  output axis and every other axis is folded into the input axis. A flax `Conv` kernel
  `(kh, kw, c_in, c_out)` becomes `(kh * kw * c_in, c_out)`; a `Dense` kernel `(in, out)` is
  itself;
* vectors, scalars and degenerate matrices (one row or one column) are not matrices.

    u = orthogonalize(update, ns_steps=5)        # singular values ~1 (within NS tolerance)
    is_matrix(kernel.shape)                      # True for (in, out) and conv kernels
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

# optax.contrib.muon's default quintic coefficients (maximal slope at zero).
NS_COEFFS = (3.4445, -4.7750, 2.0315)


def matrix_shape(shape: Sequence[int]) -> tuple[int, int] | None:
    """The matrix view `(prod(shape[:-1]), shape[-1])` of a tensor, or None if it is no matrix
    (rank < 2, or one row / one column)."""
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2:
        return None
    rows, cols = math.prod(shape[:-1]), shape[-1]
    return (rows, cols) if rows > 1 and cols > 1 else None


def is_matrix(shape: Sequence[int]) -> bool:
    """Whether a tensor of this shape gets an orthogonalised update (see module docstring)."""
    return matrix_shape(shape) is not None


def orthogonalize(x: jax.Array, ns_steps: int = 5) -> jax.Array:
    """`x` (a matrix, or a tensor viewed as one) with its singular values pushed to ~1 by
    `ns_steps` Newton-Schulz iterations (optax's; Frobenius pre-normalisation), in x's shape.

    The quintic iteration trades exactness for speed: singular values land in roughly
    [0.68, 1.2] rather than exactly 1 (measured on random matrices), which Muon found
    not to hurt.
    """
    view = matrix_shape(x.shape)
    if view is None:
        raise ValueError(f"orthogonalize needs a matrix (rank >= 2, >1 row and column); got "
                         f"shape {x.shape}")
    return jnp.reshape(newton_schulz(jnp.reshape(x, view), ns_steps), x.shape)


_HIGHEST = jax.lax.Precision.HIGHEST
_EPS = 1e-8  # optax's: added to the Frobenius norm


def _mm(a: jax.Array, b: jax.Array) -> jax.Array:
    return jnp.matmul(a, b, precision=_HIGHEST)


def newton_schulz(x: jax.Array, ns_steps: int = 5) -> jax.Array:
    """optax's `orthogonalize_via_newton_schulz(x, NS_COEFFS, ns_steps)` of a matrix (or a
    batch of them, leading axes), computed so that `x` itself enters only two products.

    With X0 = x / |x|_F and A = X X^T, each step is X <- a X + (b A + c A^2) X. The first
    step is computed from the Gram matrix G = x x^T alone: A0 = G / |x|_F^2, |x|_F^2 =
    trace(G), X1 = ((a I + b A0 + c A0^2) / |x|_F) x. Why: when `x` is a fused computation
    (a learned optimizer's per-entry network), every consumer of it (the norm, the products
    of the first step, `a X0`) is a separate XLA fusion into which the CPU backend
    duplicates the whole network; here there are two (measured on the regression-MLP setup
    of experiments/bench_meta.py: NormMLPLOpt's PES update part 400 -> 159 ms, 2.5x, on
    CPU). Like optax, a matrix with more rows than columns is iterated on its transpose.
    """
    if x.ndim < 2:
        raise ValueError(f"newton_schulz needs a matrix; got shape {x.shape}")
    if ns_steps < 1:
        raise ValueError(f"ns_steps must be >= 1, got {ns_steps}")
    a, b, c = NS_COEFFS
    transposed = x.shape[-2] > x.shape[-1]
    if transposed:
        x = jnp.swapaxes(x, -1, -2)
    gram = _mm(x, jnp.swapaxes(x, -1, -2))
    inv_norm = 1.0 / (jnp.sqrt(jnp.trace(gram, axis1=-2, axis2=-1)) + _EPS)[..., None, None]
    a0 = gram * jnp.square(inv_norm)
    eye = jnp.eye(a0.shape[-1], dtype=a0.dtype)
    y = _mm((a * eye + b * a0 + c * _mm(a0, a0)) * inv_norm, x)
    for _ in range(ns_steps - 1):
        gram = _mm(y, jnp.swapaxes(y, -1, -2))
        y = a * y + _mm(b * gram + c * _mm(gram, gram), y)
    return jnp.swapaxes(y, -1, -2) if transposed else y
