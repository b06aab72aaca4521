"""Choosing a remat policy for a memory budget: the cheapest to recompute that fits.

Each candidate's gradient step is compiled (never run) and measured with `memory_stats`:

    from parallel import remat
    make_loss = lambda policy: functools.partial(model_loss, remat_policy=policy)
    choice = remat.choose_policy(make_loss, params, batch, budget_bytes=2**30)
    choice.policy, choice.stats.footprint_bytes, choice.footprints   # what was measured
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from parallel.remat.memory import MemoryStats, memory_stats
from parallel.remat.policies import (
    DOTS,
    DOTS_NO_BATCH,
    FULL,
    NAMES,
    NONE,
    OFFLOAD,
    VALID_POLICIES,
    parse_policy,
)

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
