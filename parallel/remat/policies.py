"""Named remat policies (MaxText style) and `checkpoint`, which applies one to a function.

`jax.checkpoint` trades recomputation in the backward pass for memory: instead of keeping every
intermediate of the forward pass until the backward pass needs it, a checkpointed function keeps
only what its policy allows and recomputes the rest.

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
    nnx.remat(f, policy=remat.jax_policy("dots"))          # ...or a framework's own remat
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import jax
import jax.extend.core as jex

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
