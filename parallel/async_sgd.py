"""Asynchronous SGD, simulated faithfully on one device.

A parameter server holds the params; workers read them, compute a gradient on their own batch,
and push it back. The server applies every gradient as soon as it arrives, to its *current*
params. While a worker was computing, other workers' updates landed, so its gradient was computed
at params `staleness` versions old:

    w[t + 1] = w[t] - lr(staleness[t]) * grad(w[t - staleness[t]], batch[t])

Which update is how stale depends only on timing, never on parameter values, so the simulation
has two parts:

1. A *schedule* (host-side NumPy): the staleness of every update and the simulated wall-clock at
   which it lands. `fixed_schedule`, `random_schedule`, or `worker_schedule` (an event-driven
   simulation of workers of given speeds, stragglers included). `sync_schedule` gives the clock
   of synchronous SGD over the same workers: every round waits for the slowest one.
2. `run_async_sgd`: the server as one jitted `lax.scan` over updates, keeping a ring buffer of the
   last `max_staleness + 1` params versions so each update reads the version its worker saw.
   Any optax transform runs on the server; `staleness_scaling="inverse"` divides the update by
   the staleness (Zhang et al. 2016, "Staleness-aware async-SGD").

    sched = worker_schedule(num_updates=500, slowness=[1, 1, 1, 4], seed=0)
    result = run_async_sgd(loss_fn, optax.sgd(0.05), params, batches, sched.staleness)
    plt.plot(sched.wall_clock, result.losses)
"""

from __future__ import annotations

import functools
import heapq
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

PyTree = Any
STALENESS_SCALINGS = ("none", "inverse")


class Schedule(NamedTuple):
    """When each update lands and how stale it is (NumPy arrays of length num_updates)."""

    staleness: np.ndarray  # int32: update t uses params version t - staleness[t]
    wall_clock: np.ndarray  # float64: simulated time at which update t is applied
    worker: np.ndarray  # int32: which worker computed update t


def _clamp(staleness: np.ndarray) -> np.ndarray:
    # Update t cannot read a version older than the initial params (version 0).
    return np.minimum(staleness, np.arange(len(staleness))).astype(np.int32)


def fixed_schedule(num_updates: int, staleness: int, time_per_update: float = 1.0) -> Schedule:
    """Every update is `staleness` versions old (fewer at the start); evenly spaced in time."""
    if staleness < 0:
        raise ValueError(f"staleness must be >= 0, got {staleness}")
    stale = _clamp(np.full(num_updates, staleness))
    clock = time_per_update * np.arange(1, num_updates + 1, dtype=np.float64)
    return Schedule(stale, clock, np.arange(num_updates, dtype=np.int32) % (staleness + 1))


def random_schedule(
    num_updates: int, max_staleness: int, seed: int, time_per_update: float = 1.0
) -> Schedule:
    """Staleness drawn uniformly from {0, ..., max_staleness} for every update."""
    if max_staleness < 0:
        raise ValueError(f"max_staleness must be >= 0, got {max_staleness}")
    rng = np.random.default_rng(seed)
    stale = _clamp(rng.integers(0, max_staleness + 1, size=num_updates))
    clock = time_per_update * np.arange(1, num_updates + 1, dtype=np.float64)
    return Schedule(stale, clock, np.zeros(num_updates, np.int32))


def _compute_time_sampler(slowness: Sequence[float], jitter: float, seed: int) -> Callable:
    """`draw(worker) -> seconds`: slowness[worker] times a mean-one log-normal factor."""
    slowness = np.asarray(slowness, np.float64)
    if slowness.ndim != 1 or len(slowness) == 0 or np.any(slowness <= 0):
        raise ValueError(f"slowness must be a non-empty list of positive numbers, got {slowness}")
    if jitter < 0:
        raise ValueError(f"jitter must be >= 0, got {jitter}")
    rng = np.random.default_rng(seed)
    return lambda worker: slowness[worker] * np.exp(jitter * rng.normal() - jitter**2 / 2)


def worker_schedule(
    num_updates: int, slowness: Sequence[float], seed: int = 0, jitter: float = 0.0
) -> Schedule:
    """Event-driven simulation of asynchronous workers.

    All workers read version 0 at time 0. Worker `i` needs `slowness[i]` (times a log-normal
    factor of spread `jitter`) per gradient; when it finishes, the server applies its gradient
    as the next update and the worker immediately reads the new version and starts again. The
    staleness of an update is the number of updates the server applied while it was computed.

    Args:
      num_updates: how many updates the server applies.
      slowness: mean seconds per gradient of each worker, e.g. `[1, 1, 1, 4]` (one straggler).
      seed: seed of the compute-time noise.
      jitter: log-normal spread of compute times (0: deterministic).
    """
    draw = _compute_time_sampler(slowness, jitter, seed)
    # (finish time, worker, version it read); ties broken by worker id, deterministically.
    running = [(draw(worker), worker, 0) for worker in range(len(slowness))]
    heapq.heapify(running)
    stale = np.zeros(num_updates, np.int32)
    clock = np.zeros(num_updates, np.float64)
    who = np.zeros(num_updates, np.int32)
    for update in range(num_updates):
        finish, worker, version = heapq.heappop(running)
        stale[update], clock[update], who[update] = update - version, finish, worker
        heapq.heappush(running, (finish + draw(worker), worker, update + 1))
    return Schedule(stale, clock, who)


def sync_schedule(
    num_steps: int, slowness: Sequence[float], seed: int = 0, jitter: float = 0.0
) -> Schedule:
    """Synchronous SGD on the same workers: every step waits for the slowest worker, so a step
    takes the max of the workers' compute times. Staleness is 0; `worker` is the slowest one."""
    draw = _compute_time_sampler(slowness, jitter, seed)
    times = np.array([[draw(w) for w in range(len(slowness))] for _ in range(num_steps)])
    times = times.reshape(num_steps, len(slowness))
    slowest = times.argmax(axis=1).astype(np.int32)
    return Schedule(np.zeros(num_steps, np.int32), np.cumsum(times.max(axis=1)), slowest)


class AsyncResult(NamedTuple):
    """Final params and optimizer state, and per-update losses."""

    params: PyTree
    opt_state: PyTree
    losses: jax.Array  # [num_updates]: loss of the params each update was computed at
    eval_losses: jax.Array | None  # [num_updates]: `eval_fn` of the server params after each update


def staleness_scale(staleness: jax.Array, scaling: str) -> jax.Array:
    """Multiplier of an update of this staleness: 1, or 1 / max(staleness, 1) for "inverse"."""
    if scaling not in STALENESS_SCALINGS:
        raise ValueError(f"staleness_scaling must be one of {STALENESS_SCALINGS}, got {scaling!r}")
    if scaling == "none":
        return jnp.ones_like(staleness, jnp.float32)
    return 1.0 / jnp.maximum(staleness, 1).astype(jnp.float32)


def run_async_sgd(
    loss_fn: Callable[[PyTree, PyTree], jax.Array],
    tx: optax.GradientTransformation,
    params: PyTree,
    batches: PyTree,
    staleness: np.ndarray,
    *,
    staleness_scaling: str = "none",
    eval_fn: Callable[[PyTree], jax.Array] | None = None,
) -> AsyncResult:
    """Run the parameter server over a staleness schedule, as one jitted scan.

    Args:
      loss_fn: `loss_fn(params, batch) -> scalar` mean loss.
      tx: the server's optax transform (passed `value=` the stale loss, for learned optimizers).
      params: initial params (version 0).
      batches: pytree whose leaves have leading dimension `num_updates`: update t's batch.
      staleness: int array [num_updates], e.g. `schedule.staleness`; must satisfy
        `staleness[t] <= t`.
      staleness_scaling: "none" or "inverse" (update divided by its staleness).
      eval_fn: optional `eval_fn(params) -> scalar`, evaluated on the server params after
        every update (e.g. the loss on a fixed validation batch).

    Returns:
      AsyncResult.
    """
    staleness = np.asarray(staleness)
    num_updates = len(staleness)
    if staleness.ndim != 1 or np.any(staleness < 0) or np.any(staleness > np.arange(num_updates)):
        raise ValueError("staleness must be a 1-D array with 0 <= staleness[t] <= t")
    batch_lengths = {x.shape[0] for x in jax.tree.leaves(batches)}
    if batch_lengths != {num_updates}:
        raise ValueError(
            f"batches must have leading dimension num_updates={num_updates}, got {batch_lengths}"
        )
    staleness_scale(jnp.zeros(()), staleness_scaling)  # validates the name early
    history = int(staleness.max(initial=0)) + 1
    run = _server_scan(loss_fn, tx, history, staleness_scaling, eval_fn)
    return run(params, batches, jnp.asarray(staleness, jnp.int32))


@functools.lru_cache(maxsize=32)
def _server_scan(loss_fn, tx, history: int, staleness_scaling: str, eval_fn):
    # Cached so repeated runs with the same functions and history length reuse one compilation.
    tx = optax.with_extra_args_support(tx)

    @jax.jit
    def run(params, batches, staleness):
        # Ring buffer of the last `history` params versions; version v lives in slot v % history.
        buffer = jax.tree.map(lambda x: jnp.zeros((history, *x.shape), x.dtype), params)

        def update(carry, inputs):
            params, opt_state, buffer = carry
            version, stale, batch = inputs
            buffer = jax.tree.map(lambda b, p: b.at[version % history].set(p), buffer, params)
            seen = jax.tree.map(lambda b: b[(version - stale) % history], buffer)
            loss, grads = jax.value_and_grad(loss_fn)(seen, batch)
            updates, opt_state = tx.update(grads, opt_state, params, value=loss)
            scale = staleness_scale(stale, staleness_scaling)
            updates = jax.tree.map(lambda u: (scale * u).astype(u.dtype), updates)
            params = optax.apply_updates(params, updates)
            evaluated = eval_fn(params) if eval_fn is not None else jnp.zeros(())
            return (params, opt_state, buffer), (loss, evaluated)

        versions = jnp.arange(staleness.shape[0])
        (params, opt_state, _), (losses, evals) = jax.lax.scan(
            update, (params, tx.init(params), buffer), (versions, staleness, batches)
        )
        return AsyncResult(params, opt_state, losses, evals if eval_fn is not None else None)

    return run
