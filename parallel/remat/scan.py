"""Scans over layers with remat: per layer (`scan_layers`) or in sqrt(n) segments (`sqrt_scan`).

Checkpointing each layer of a depth-L scan still keeps one carry per layer; checkpointing
segments of ~sqrt(L) layers keeps O(sqrt(L)) activations for about one extra forward pass
(Chen et al. 2016):

    from parallel import remat
    y = remat.scan_layers(layer_fn, x, stacked_params, policy="full")   # O(depth) carries
    y = remat.sqrt_scan(layer_fn, x, stacked_params)                     # O(sqrt(depth))
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax

from parallel.remat.policies import FULL, NONE, PolicySpec, checkpoint


def scan_layers(
    layer_fn: Callable[[Any, Any], Any],
    carry: Any,
    stacked_params: Any,
    *,
    policy: str | PolicySpec = NONE,
) -> Any:
    """`carry = layer_fn(carry, params[i])` for each layer i of `stacked_params` (leading axis =
    depth), each layer checkpointed with `policy`. With "full" the backward keeps one carry per
    layer: memory still grows linearly with depth (see `sqrt_scan` for sub-linear growth)."""
    layer = checkpoint(layer_fn, policy, prevent_cse=False)
    carry, _ = jax.lax.scan(lambda c, p: (layer(c, p), None), carry, stacked_params)
    return carry


def _depth(stacked_params: Any) -> int:
    leaves = jax.tree.leaves(stacked_params)
    if not leaves:
        raise ValueError("stacked_params has no arrays; it must hold one slice per layer")
    depths = {leaf.shape[0] if leaf.ndim else None for leaf in leaves}
    if len(depths) != 1 or None in depths:
        raise ValueError(
            f"every leaf of stacked_params needs the same leading (depth) axis; got {depths}"
        )
    return depths.pop()


def default_segment_length(depth: int) -> int:
    """The divisor of `depth` nearest sqrt(depth) (within a factor 2), so no remainder segment
    is needed; round(sqrt(depth)) when there is none (e.g. a prime depth)."""
    root = math.sqrt(depth)
    divisors = [k for k in range(1, depth + 1) if depth % k == 0 and root / 2 <= k <= 2 * root]
    if divisors:
        return min(divisors, key=lambda k: abs(math.log(k / root)))
    return max(1, round(root))


def sqrt_scan(
    layer_fn: Callable[[Any, Any], Any],
    carry: Any,
    stacked_params: Any,
    *,
    segment_length: int | None = None,
    inner_policy: str | PolicySpec = NONE,
) -> Any:
    """A scan over layers checkpointed in segments, so memory grows like sqrt(depth).

    The depth-L scan becomes an outer scan over L / k segments whose body (an inner scan over k
    layers, no remat inside) is checkpointed: the forward keeps only the L / k segment inputs,
    and the backward recomputes one segment at a time, keeping its k layers' residuals. With
    k ~ sqrt(L) both terms are O(sqrt(L)), for about one extra forward pass (Chen et al. 2016).
    A remainder of L mod k layers runs as one more checkpointed segment. When one layer's
    residuals are much bigger than its carry, `inner_policy="full"` also checkpoints each layer
    inside a segment: the backward then keeps ~2 sqrt(L) carries plus one layer's residuals, for
    a second extra forward pass.

    Args:
      layer_fn: `(carry, layer_params) -> carry`.
      carry: the input of the first layer (any pytree).
      stacked_params: pytree whose leaves have a leading depth axis L.
      segment_length: layers per segment (default: `default_segment_length(L)` ~ sqrt(L)).
      inner_policy: remat policy of each layer inside a segment (default "none").

    Returns:
      The carry after all L layers (same value as a plain scan).

    Example:
      y = sqrt_scan(lambda x, w: jnp.tanh(x @ w), x, w_LDD)   # w_LDD: (depth, D, D)
    """
    depth = _depth(stacked_params)
    if segment_length is None:
        segment_length = default_segment_length(depth)
    if not 1 <= segment_length <= depth:
        raise ValueError(f"segment_length must be in [1, depth={depth}], got {segment_length}")
    num_segments, remainder = divmod(depth, segment_length)

    def segment(c, segment_params):
        return scan_layers(layer_fn, c, segment_params, policy=inner_policy)

    remat_segment = checkpoint(segment, FULL, prevent_cse=False)
    main = num_segments * segment_length
    segmented = jax.tree.map(
        lambda x: x[:main].reshape(num_segments, segment_length, *x.shape[1:]), stacked_params
    )
    carry, _ = jax.lax.scan(lambda c, p: (remat_segment(c, p), None), carry, segmented)
    if remainder:
        carry = remat_segment(carry, jax.tree.map(lambda x: x[main:], stacked_params))
    return carry
