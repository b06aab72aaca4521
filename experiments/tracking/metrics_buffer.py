"""Getting metrics off the device cheaply: packed transfers, at log steps only, one interval late.

    buffer = tracking.MetricsBuffer(tracker, every=10, num_steps=num_steps,
                                    speed=tracking.SpeedMeter(examples_per_step=128))
    for step in range(num_steps):
        params, opt_state, metrics = train_step(params, opt_state, batch)  # metrics on device
        buffer.add(step, metrics)          # no host sync except at log steps
    buffer.flush()                         # logs what is still in flight

Two costs dominate naive logging of a fast jitted step, and both are avoided here:
- `jax.device_get` makes one transfer per leaf; `start_fetch` stacks all scalars of one dtype
  into one array on device first (one transfer per dtype, ~5-10x faster for 16 metrics).
- Fetching at a log step waits for that step to finish, so the host stops dispatching ahead.
  With `lag=True` (default) a log step only *starts* an asynchronous copy; the values arrive
  while later steps run and are logged at the next log step (or `flush`). Rows keep their
  own step numbers; they are written one interval late. The first row is fetched at once so a
  run shows its first values (and its compile + first-step time) immediately.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from experiments.tracking.run_metrics import SpeedMeter, log_every, resource_metrics

PyTree = Any


@jax.jit
def _pack_scalars(groups: tuple[tuple[jax.Array, ...], ...]) -> tuple[jax.Array, ...]:
    return tuple(jnp.stack([jnp.ravel(x)[0] for x in group]) for group in groups)


class PendingFetch:
    """A host copy of a pytree in flight; `result()` returns it (NumPy leaves)."""

    def __init__(self, tree: PyTree):
        leaves, self._treedef = jax.tree.flatten(tree)
        # A replicated array of a multi-process run is not fully addressable: every process
        # holds the whole value, so its first local shard is the value.
        leaves = [x.addressable_data(0) if isinstance(x, jax.Array)
                  and not x.is_fully_addressable else x for x in leaves]
        by_dtype: dict[Any, list[int]] = {}
        for i, x in enumerate(leaves):
            if isinstance(x, jax.Array) and x.size == 1:
                by_dtype.setdefault(x.dtype, []).append(i)
        if sum(len(group) for group in by_dtype.values()) < 2:
            by_dtype = {}  # packing one scalar would only add a dispatch
        self._groups = list(by_dtype.values())
        # Scalars grouped by exact dtype: stacking never promotes or changes a value.
        self._packed = (_pack_scalars(tuple(tuple(leaves[i] for i in g) for g in self._groups))
                        if self._groups else ())
        packed_indices = {i for group in self._groups for i in group}
        self._rest = {i: x for i, x in enumerate(leaves) if i not in packed_indices}
        for x in (*self._packed, *self._rest.values()):
            if isinstance(x, jax.Array):
                x.copy_to_host_async()
        self._num_leaves = len(leaves)

    def result(self) -> PyTree:
        host: list[Any] = [None] * self._num_leaves
        for indices, values in zip(self._groups, jax.device_get(self._packed), strict=True):
            for i, value in zip(indices, values, strict=True):
                host[i] = value
        if self._rest:
            for i, value in zip(self._rest, jax.device_get(list(self._rest.values())),
                                strict=True):
                host[i] = value
        return jax.tree.unflatten(self._treedef, host)


def start_fetch(tree: PyTree) -> PendingFetch:
    """Start copying `tree` to host (scalars packed per dtype); `.result()` waits for it."""
    return PendingFetch(tree)


def fetch_to_host(tree: PyTree) -> PyTree:
    """`jax.device_get(tree)` with scalars packed into one transfer per dtype."""
    return start_fetch(tree).result()


def _flatten(metrics: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """{"a": {"b": x}} -> {prefix + "a/b": x} (the names trackers log)."""
    flat = {}
    for key, value in metrics.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}/"))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


class MetricsBuffer:
    """Keeps per-step device metrics and fetches them in one packed transfer at log steps.

    Args:
      tracker: where rows go (any `Tracker`).
      every: log interval in steps (see `log_every`).
      num_steps: total steps, so the last step is logged too.
      reduce: "last" logs the values of the log step only (nothing is kept in between);
        "mean" averages every step since the previous log (keeps those device scalars).
      prefix: prepended to every name ("train/" -> "train/loss").
      speed: a SpeedMeter; its rates (measured when a log step is reached) join the row.
      resources: add `resource_metrics()` (host RSS, device memory) to each row.
      progress: a tqdm bar whose postfix shows the latest logged values.
      lag: start the copy at a log step and log it at the next one (see module docstring);
        False fetches and logs at the log step itself (waits for the device).
    """

    def __init__(self, tracker, every: int, num_steps: int | None = None, *,
                 reduce: str = "last", prefix: str = "", speed: SpeedMeter | None = None,
                 resources: bool = False, progress=None, lag: bool = True):
        if reduce not in ("last", "mean"):
            raise ValueError(f"reduce must be 'last' or 'mean', got {reduce!r}")
        log_every(0, every)  # validates `every`
        self.tracker, self.every, self.num_steps = tracker, every, num_steps
        self.reduce, self.prefix, self.speed = reduce, prefix, speed
        self.resources, self.progress, self.lag = resources, progress, lag
        self._pending: list[tuple[int, Mapping[str, Any]]] = []
        self._in_flight: tuple[int, PendingFetch, dict[str, float]] | None = None
        self._latest: dict[str, Any] = {}
        self._rows_logged = 0

    def should_log(self, step: int) -> bool:
        return log_every(step, self.every, self.num_steps)

    def add(self, step: int, metrics: Mapping[str, Any],
            latest: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
        """Record one step's metrics; at a log step, log a row and return it (host values).

        `latest` joins the row as it is at the log step, whatever `reduce` says (counters,
        totals: values whose mean over the interval means nothing). With `lag`, the row
        returned at a log step is the previous log step's (None at the first lagged one);
        `flush` returns the rest.
        """
        self._latest = dict(latest or {})
        if self.reduce == "last":
            self._pending = [(step, metrics)]
        else:
            self._pending.append((step, metrics))
        if not self.should_log(step):
            return None
        previous = self._in_flight
        self._in_flight = self._start()
        if self.lag and self._rows_logged > 0:
            return self._complete(previous) if previous is not None else None
        row = self._complete(self._in_flight)
        self._in_flight = None
        return row

    def flush(self) -> dict[str, Any] | None:
        """Log everything pending or in flight; returns the last row logged (or None)."""
        row = None
        if self._in_flight is not None:
            row = self._complete(self._in_flight)
            self._in_flight = None
        if self._pending:
            row = self._complete(self._start())
        return row

    def _start(self) -> tuple[int, PendingFetch, dict[str, float]]:
        steps, values = zip(*self._pending, strict=True)
        self._pending = []
        extras = self.speed.measure(steps[-1]) if self.speed is not None else {}
        return steps[-1], start_fetch((list(values), self._latest)), extras

    def _complete(self, in_flight: tuple[int, PendingFetch, dict[str, float]]) -> dict[str, Any]:
        step, fetch, extras = in_flight
        host_values, latest = fetch.result()
        if self.reduce == "mean":
            reduced = jax.tree.map(lambda *xs: np.mean(np.stack(xs), axis=0), *host_values)
        else:
            reduced = host_values[-1]
        row = _flatten({**reduced, **latest}, self.prefix)
        row.update(extras)
        if self.resources:
            row.update(resource_metrics())
        self.tracker.log_metrics(step, row)
        self._rows_logged += 1
        if self.progress is not None:
            self.progress.set_postfix({k: f"{float(v):.4g}" for k, v in list(row.items())[:4]},
                                      refresh=False)
        return row
