"""Gradient checkpointing (remat) with named policies, measured memory, and sqrt(n) scans.

`jax.checkpoint` trades recomputation in the backward pass for memory: instead of keeping every
intermediate of the forward pass until the backward pass needs it, a checkpointed function keeps
only what its policy allows and recomputes the rest. This module names the useful policies
(MaxText style), measures what each one costs from the compiled program, picks one for a memory
budget, and checkpoints a scan over layers in sqrt(n) segments (Chen et al. 2016).

Policies (recompute cost grows down the list, memory shrinks):
  "none"            no remat: `checkpoint` returns `fn` itself.
  "dots"            keep matmul outputs, recompute elementwise ops.
  "dots_no_batch"   keep matmul outputs without batch dimensions (weights-like contractions);
                    recompute batched matmuls such as attention scores too.
  "names:a,b"       keep only values tagged `jax.ad_checkpoint.checkpoint_name(x, "a")` / "b".
  "full"            keep nothing but the inputs; recompute the whole function.
  "offload:a,b"     like "names:a,b", but the tagged values go to pinned host memory.

    from parallel import remat
    block = remat.checkpoint(block, policy="dots")        # a function, a flax block's apply...
    def body(x, layer_params):                             # ...or the body of a scan over layers
        return block(layer_params, x), None
    stats = remat.memory_stats(loss_fn, params, batch)    # compiled bytes + saved residuals
    choice = remat.choose_policy(make_loss, params, batch, budget_bytes=2**30)
    y = remat.sqrt_scan(layer_fn, x, stacked_params)      # O(sqrt(depth)) activation memory
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import jax
import jax.extend.core as jex
import numpy as np

NONE, FULL, DOTS, DOTS_NO_BATCH, NAMES, OFFLOAD = (
    "none",
    "full",
    "dots",
    "dots_no_batch",
    "names",
    "offload",
)
SIMPLE_POLICIES = (NONE, DOTS, DOTS_NO_BATCH, FULL)
VALID_POLICIES = (NONE, FULL, DOTS, DOTS_NO_BATCH, "names:<a,b,...>", "offload:<a,b,...>")
# The host memory kind that XLA offloads residuals to.
HOST_MEMORY_KIND = "pinned_host"


class PolicySpec(NamedTuple):
    """A parsed policy string: its kind and, for "names:"/"offload:", the tag names."""

    kind: str
    names: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"{self.kind}:{','.join(self.names)}" if self.names else self.kind


def parse_policy(policy: str | PolicySpec) -> PolicySpec:
    """Parses "full", "dots", "names:a,b", ... into a PolicySpec, or raises a ValueError
    listing the valid policies."""
    if isinstance(policy, PolicySpec):
        return policy
    if not isinstance(policy, str):
        raise TypeError(
            f"policy must be a string, one of {VALID_POLICIES}, got {type(policy).__name__}"
        )
    text = policy.strip()
    if text in SIMPLE_POLICIES:
        return PolicySpec(text)
    kind, sep, rest = text.partition(":")
    kind = kind.strip()
    if sep and kind in (NAMES, OFFLOAD):
        names = tuple(n.strip() for n in rest.split(",") if n.strip())
        if not names:
            raise ValueError(
                f"policy {policy!r} names no tags; write e.g. '{kind}:attn_qkv,mlp_hidden' "
                f"(valid policies are {VALID_POLICIES})"
            )
        return PolicySpec(kind, names)
    raise ValueError(f"unknown remat policy {policy!r}; valid policies are {VALID_POLICIES}")


def jax_policy(policy: str | PolicySpec) -> Callable[..., Any] | None:
    """The `jax.checkpoint_policies` callable for a policy string ("none" and "full" -> None).

    Use it where a framework takes a raw policy, e.g. `nnx.remat(f, policy=jax_policy("dots"))`.
    """
    spec = parse_policy(policy)
    policies = jax.checkpoint_policies
    if spec.kind in (NONE, FULL):
        return None  # "full" is jax.checkpoint's default: save nothing but the inputs.
    if spec.kind == DOTS:
        return policies.dots_saveable
    if spec.kind == DOTS_NO_BATCH:
        return policies.dots_with_no_batch_dims_saveable
    if spec.kind == NAMES:
        return policies.save_only_these_names(*spec.names)
    return policies.save_and_offload_only_these_names(
        names_which_can_be_saved=[],
        names_which_can_be_offloaded=list(spec.names),
        offload_src="device",
        offload_dst=HOST_MEMORY_KIND,
    )


def require_host_offload(device: Any | None = None) -> None:
    """Raises a RuntimeError unless `device` (default: the first device) has pinned host memory,
    which XLA needs to offload residuals."""
    device = jax.devices()[0] if device is None else device
    kinds = [m.kind for m in device.addressable_memories()]
    if HOST_MEMORY_KIND not in kinds:
        raise RuntimeError(
            f"remat policy 'offload:...' needs host offload, but {device.platform} device "
            f"{device} has memory kinds {kinds} (no {HOST_MEMORY_KIND!r}); use 'names:...' "
            "or 'full' instead"
        )


def checkpoint(
    fn: Callable[..., Any],
    policy: str | PolicySpec = FULL,
    *,
    prevent_cse: bool = True,
    static_argnums: int | tuple[int, ...] = (),
    check_names: bool = True,
) -> Callable[..., Any]:
    """`fn` wrapped in `jax.checkpoint` under a named policy (see the module docstring).

    Args:
      fn: the function to rematerialize (a layer, a block's apply, a scan body, a loss).
      policy: "none", "full", "dots", "dots_no_batch", "names:a,b" or "offload:a,b".
      prevent_cse: passed to `jax.checkpoint`; False is safe (and faster) inside `lax.scan`.
      static_argnums: passed to `jax.checkpoint`.
      check_names: for "names:"/"offload:" policies, when `fn` is traced, raise a ValueError if
        a listed name tags nothing inside `fn` (such a policy would silently save nothing).

    Returns:
      `fn` itself for "none", else the checkpointed function with the same signature.

    Example:
      block = checkpoint(block, "names:attn_out,mlp_out")
      loss = lambda p, x: jnp.sum(block(p, x) ** 2)
      grads = jax.grad(loss)(params, x)     # equal to the grads without remat
    """
    spec = parse_policy(policy)
    if spec.kind == NONE:
        return fn
    if spec.kind == OFFLOAD:
        require_host_offload()
    remat_fn = jax.checkpoint(
        fn, policy=jax_policy(spec), prevent_cse=prevent_cse, static_argnums=static_argnums
    )
    if not (spec.names and check_names):
        return remat_fn

    @functools.wraps(fn)
    def checked(*args, **kwargs):
        # Checked at trace time (once per compilation under jit); costs one extra trace.
        static = (static_argnums,) if isinstance(static_argnums, int) else static_argnums
        found = tagged_names(fn, *args, static_argnums=static, **kwargs)
        missing = [n for n in spec.names if n not in found]
        if missing:
            raise ValueError(
                f"remat policy {str(spec)!r}: names {missing} tag nothing inside "
                f"{getattr(fn, '__name__', fn)!r}; the names tagged there are {sorted(found)} "
                "(tag values with jax.ad_checkpoint.checkpoint_name)"
            )
        return remat_fn(*args, **kwargs)

    return checked


def _all_jaxprs(jaxpr: jex.Jaxpr) -> Iterator[jex.Jaxpr]:
    yield jaxpr
    for sub in jex.subjaxprs(jaxpr):
        yield from _all_jaxprs(sub)


def tagged_names(fn: Callable[..., Any], *args, static_argnums=(), **kwargs) -> set[str]:
    """The `checkpoint_name` tags used anywhere inside `fn(*args, **kwargs)`, nested scans,
    conds and inner checkpoints included (traced abstractly, nothing runs)."""
    closed = jax.make_jaxpr(fn, static_argnums=static_argnums)(*args, **kwargs)
    return {
        eqn.params["name"]
        for jaxpr in _all_jaxprs(closed.jaxpr)
        for eqn in jaxpr.eqns
        if eqn.primitive.name == "name"
    }


# --------------------------------------------------------------------------- memory analysis


class Residual(NamedTuple):
    """One value the backward pass keeps from the forward pass."""

    shape: tuple[int, ...]
    dtype: str
    nbytes: int
    source: str  # e.g. "output of tanh from model.py:12 (block)" or "from the argument x"

    @property
    def is_argument(self) -> bool:
        """Arguments are alive anyway: keeping them costs no extra memory."""
        return "from the argument" in self.source


class MemoryStats(NamedTuple):
    """Compiled memory of a program, plus (for a gradient) what its forward pass saves."""

    temp_bytes: int
    argument_bytes: int
    output_bytes: int
    alias_bytes: int
    host_temp_bytes: int
    residuals: tuple[Residual, ...] = ()

    @property
    def footprint_bytes(self) -> int:
        """Device bytes live while the program runs: arguments + outputs + temporaries."""
        return self.argument_bytes + self.output_bytes + self.temp_bytes - self.alias_bytes

    @property
    def residual_bytes(self) -> int:
        """Bytes of saved residuals that are not arguments (what remat policies shrink)."""
        return sum(r.nbytes for r in self.residuals if not r.is_argument)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able figures (residuals as a count and a byte total)."""
        return {
            "temp_bytes": self.temp_bytes,
            "argument_bytes": self.argument_bytes,
            "output_bytes": self.output_bytes,
            "alias_bytes": self.alias_bytes,
            "host_temp_bytes": self.host_temp_bytes,
            "footprint_bytes": self.footprint_bytes,
            "num_residuals": len(self.residuals),
            "residual_bytes": self.residual_bytes,
        }


def compiled_memory(fn: Callable[..., Any], *args, **kwargs) -> MemoryStats:
    """Memory analysis of `jax.jit(fn)` compiled for `args` (arrays or `jax.ShapeDtypeStruct`s);
    nothing runs. Residuals are left empty: see `memory_stats` for a gradient's residuals."""
    analysis = jax.jit(fn).lower(*args, **kwargs).compile().memory_analysis()
    if analysis is None:
        raise RuntimeError(f"backend {jax.default_backend()!r} reports no compiled memory analysis")
    return MemoryStats(
        temp_bytes=int(analysis.temp_size_in_bytes),
        argument_bytes=int(analysis.argument_size_in_bytes),
        output_bytes=int(analysis.output_size_in_bytes),
        alias_bytes=int(analysis.alias_size_in_bytes),
        host_temp_bytes=int(getattr(analysis, "host_temp_size_in_bytes", 0)),
    )


def saved_residuals(fn: Callable[..., Any], *args) -> tuple[Residual, ...]:
    """The values `jax.vjp(fn, *args)` keeps for the backward pass, with where each comes from.

    Shapes come from the vjp closure's leaves; sources from `jax.ad_checkpoint.
    print_saved_residuals` (the public form of the same analysis, which lists them in the same
    order). Traced abstractly: nothing runs.
    """
    shapes = jax.tree.leaves(jax.eval_shape(lambda *a: jax.vjp(fn, *a)[1], *args))
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        jax.ad_checkpoint.print_saved_residuals(fn, *args)
    lines = printed.getvalue().splitlines()
    sources = [line.partition(" ")[2] for line in lines]
    if len(sources) != len(shapes):  # should not happen; keep the sizes, drop the labels
        sources = ["unknown"] * len(shapes)
    return tuple(
        Residual(
            shape=tuple(s.shape),
            dtype=str(s.dtype),
            nbytes=int(np.prod(s.shape, dtype=np.int64)) * np.dtype(s.dtype).itemsize,
            source=src,
        )
        for s, src in zip(shapes, sources, strict=True)
    )


def memory_stats(
    fn: Callable[..., Any], *args, argnums: int | Sequence[int] = 0, has_aux: bool = False
) -> MemoryStats:
    """Memory of one gradient step of the scalar function `fn`, without running it.

    Compiles `jax.value_and_grad(fn, argnums, has_aux)` for `args` and reports its temporary,
    argument and output bytes, plus the residuals `fn`'s forward pass saves for the backward.

    Args:
      fn: scalar loss, e.g. `loss(params, batch)` whose blocks call `checkpoint(..., policy)`.
      *args: arrays or `jax.ShapeDtypeStruct`s.
      argnums, has_aux: as in `jax.value_and_grad`.

    Example:
      stats = memory_stats(loss, params, batch)
      print(stats.temp_bytes, stats.residual_bytes, [r.source for r in stats.residuals])
    """
    step = jax.value_and_grad(fn, argnums=argnums, has_aux=has_aux)
    compiled = compiled_memory(step, *args)
    forward = (lambda *a: fn(*a)[0]) if has_aux else fn
    return compiled._replace(residuals=saved_residuals(forward, *args))


# --------------------------------------------------------------------------- choosing a policy

DEFAULT_CANDIDATES = (NONE, DOTS, DOTS_NO_BATCH, FULL)
# Recompute cost, lowest first; within one rank the caller's order is kept.
_RECOMPUTE_RANK = {NONE: 0, DOTS: 1, DOTS_NO_BATCH: 2, NAMES: 3, OFFLOAD: 3, FULL: 4}


class PolicyChoice(NamedTuple):
    """The chosen policy, its memory, and the footprint of every policy measured on the way."""

    policy: str
    stats: MemoryStats
    footprints: dict[str, int]


def choose_policy(
    make_loss: Callable[[str], Callable[..., Any]],
    *args,
    budget_bytes: int,
    candidates: Sequence[str] = DEFAULT_CANDIDATES,
    argnums: int | Sequence[int] = 0,
) -> PolicyChoice:
    """The cheapest-to-recompute policy whose gradient step fits in `budget_bytes`.

    Candidates are tried in order of recompute cost (none < dots < dots_no_batch < names /
    offload < full), each compiled (never run); the first whose footprint (arguments + outputs
    + temporaries of the compiled `value_and_grad`) fits is returned.

    Args:
      make_loss: policy string -> scalar loss function; the loss applies the policy to its
        blocks, e.g. `lambda p: functools.partial(model_loss, remat_policy=p)`.
      *args: arguments of the loss (arrays or `jax.ShapeDtypeStruct`s).
      budget_bytes: device bytes available for one gradient step.
      candidates: policies to consider (any order; sorted by recompute cost).
      argnums: which arguments the gradient is taken with respect to.

    Raises:
      ValueError: no candidate fits; the message names the smallest footprint possible.
    """
    if budget_bytes <= 0:
        raise ValueError(f"budget_bytes must be positive, got {budget_bytes}")
    if not candidates:
        raise ValueError(f"candidates is empty; choose among {VALID_POLICIES}")
    specs = sorted((parse_policy(c) for c in candidates), key=lambda s: _RECOMPUTE_RANK[s.kind])
    footprints: dict[str, int] = {}
    for spec in specs:
        stats = memory_stats(make_loss(str(spec)), *args, argnums=argnums)
        footprints[str(spec)] = stats.footprint_bytes
        if stats.footprint_bytes <= budget_bytes:
            return PolicyChoice(str(spec), stats, footprints)
    smallest = min(footprints, key=footprints.get)
    raise ValueError(
        f"no remat policy fits budget_bytes={budget_bytes}: the smallest footprint is "
        f"{footprints[smallest]} bytes with policy {smallest!r} (all: {footprints}); "
        "reduce the batch size or model, or shard it"
    )


# --------------------------------------------------------------------------- scans over layers


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
