"""Orthogonalised matrix updates (as in Muon), for learned optimizers that apply them.

The Newton-Schulz iteration is optax's own (`optax.contrib` Muon's quintic iteration with its
default coefficients); this module only decides which tensors count as matrices and how a
tensor of higher rank is viewed as one:

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
from optax.contrib._muon import orthogonalize_via_newton_schulz

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
    matrix = jnp.reshape(x, view)
    out = orthogonalize_via_newton_schulz(matrix, jnp.asarray(NS_COEFFS, matrix.dtype),
                                          ns_steps=ns_steps)
    return jnp.reshape(out, x.shape)
