"""What a training loop logs besides its loss: norms, step sizes, speed, memory.

Used with `experiments.tracking.metrics_buffer.MetricsBuffer`, which decides when values leave the
device. `train_step` can add `norm_metrics(grads, updates, params)` to its metrics: a pure, jittable
function giving global and per-tensor gradient / update / parameter norms and the
learning-rate-equivalent step size of any optimizer (|update| / |grad|, and the effective
learning rate along the gradient, -<update, grad> / |grad|^2; both equal the learning rate
for plain SGD).
"""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

PyTree = Any


def log_every(step: int, every: int, num_steps: int | None = None) -> bool:
    """True at steps 0, every, 2*every, ... and at the last step (`num_steps - 1`)."""
    if every <= 0:
        raise ValueError(f"log interval must be a positive number of steps, got {every}")
    return step % every == 0 or (num_steps is not None and step == num_steps - 1)


# ----------------------------------------------------------------------------------------------
# Norms and step sizes (pure, jittable).


def _tensor_names(tree: PyTree) -> list[str]:
    paths = jax.tree_util.tree_flatten_with_path(tree)[0]
    return [jax.tree_util.keystr(path, simple=True, separator="/") or "value"
            for path, _ in paths]


def _sq_norms(tree: PyTree) -> list[jax.Array]:
    return [jnp.sum(jnp.square(jnp.asarray(x, jnp.float32))) for x in jax.tree.leaves(tree)]


def _safe_ratio(numerator: jax.Array, denominator: jax.Array) -> jax.Array:
    """numerator / denominator, NaN where the denominator is 0 (undefined, and shown as such)."""
    positive = denominator > 0
    return jnp.where(positive, numerator / jnp.where(positive, denominator, 1.0), jnp.nan)


def norm_metrics(
    grads: PyTree,
    updates: PyTree | None = None,
    params: PyTree | None = None,
    *,
    per_tensor: bool = True,
) -> dict[str, jax.Array]:
    """Gradient / update / parameter norms and step sizes, global and per tensor.

    Args:
      grads: gradient pytree.
      updates: the optimizer's updates (what `optax.apply_updates` adds), same structure.
      params: parameters, same structure (for |update| / |param|).
      per_tensor: also report each tensor under "<metric>/<path>".

    Returns:
      Flat dict of float32 scalars: "grad_norm", and with updates "update_norm",
      "update_grad_ratio" (|u| / |g|), "effective_lr" (-<u, g> / |g|^2),
      "update_grad_cosine" (cosine between u and -g); with params "param_norm" and
      "update_param_ratio". Ratios are NaN where their denominator is 0.
    """
    metrics: dict[str, jax.Array] = {}
    names = _tensor_names(grads)
    grad_sq = _sq_norms(grads)
    grad_norm = jnp.sqrt(sum(grad_sq))
    metrics["grad_norm"] = grad_norm
    if per_tensor:
        metrics.update({f"grad_norm/{n}": jnp.sqrt(s) for n, s in zip(names, grad_sq, strict=True)})
    if updates is not None:
        update_sq = _sq_norms(updates)
        update_norm = jnp.sqrt(sum(update_sq))
        inner = sum(jnp.vdot(jnp.asarray(u, jnp.float32), jnp.asarray(g, jnp.float32))
                    for u, g in zip(jax.tree.leaves(updates), jax.tree.leaves(grads), strict=True))
        metrics["update_norm"] = update_norm
        metrics["update_grad_ratio"] = _safe_ratio(update_norm, grad_norm)
        metrics["effective_lr"] = _safe_ratio(-inner, grad_norm**2)
        metrics["update_grad_cosine"] = _safe_ratio(-inner, update_norm * grad_norm)
        if per_tensor:
            for name, u_sq, g_sq in zip(names, update_sq, grad_sq, strict=True):
                metrics[f"update_norm/{name}"] = jnp.sqrt(u_sq)
                metrics[f"update_grad_ratio/{name}"] = _safe_ratio(jnp.sqrt(u_sq), jnp.sqrt(g_sq))
    if params is not None:
        param_sq = _sq_norms(params)
        param_norm = jnp.sqrt(sum(param_sq))
        metrics["param_norm"] = param_norm
        if per_tensor:
            metrics.update({f"param_norm/{n}": jnp.sqrt(s)
                            for n, s in zip(names, param_sq, strict=True)})
        if updates is not None:
            metrics["update_param_ratio"] = _safe_ratio(metrics["update_norm"], param_norm)
    return metrics


# ----------------------------------------------------------------------------------------------
# Speed and resources (host side, at log intervals).


def compile_time(fn: Callable, *args, **kwargs) -> tuple[Callable, dict[str, float]]:
    """AOT-compile a jitted `fn` for these arguments; returns (compiled, timings in seconds).

    The compiled function runs without further tracing or compiling, so timing the loop that
    uses it measures execution only:

        step, timing = compile_time(train_step, params, opt_state, batch)
        tracker.log_params({"speed": timing})       # {"lower_s": ..., "compile_s": ...}
    """
    start = time.perf_counter()
    lowered = fn.lower(*args, **kwargs)
    lowered_at = time.perf_counter()
    compiled = lowered.compile()
    done = time.perf_counter()
    return compiled, {"lower_s": lowered_at - start, "compile_s": done - lowered_at}


class SpeedMeter:
    """Steps/s (and examples/s, tokens/s) between consecutive log calls.

    Call `measure(step)` right after values were fetched to host (the device is synced then).
    The first call reports "speed/first_step_s" (time since construction: compile + one step,
    when constructed just before the loop); rates start from the second call, so compile
    time never pollutes them.
    """

    def __init__(self, examples_per_step: int | None = None, tokens_per_step: int | None = None):
        self.examples_per_step = examples_per_step
        self.tokens_per_step = tokens_per_step
        self._created = time.perf_counter()
        self._last: tuple[int, float] | None = None

    def measure(self, step: int) -> dict[str, float]:
        now = time.perf_counter()
        if self._last is None:
            self._last = (step, now)
            return {"speed/first_step_s": now - self._created}
        last_step, last_time = self._last
        self._last = (step, now)
        if step <= last_step or now <= last_time:
            return {}
        steps_per_s = (step - last_step) / (now - last_time)
        speed = {"speed/steps_per_s": steps_per_s}
        if self.examples_per_step:
            speed["speed/examples_per_s"] = steps_per_s * self.examples_per_step
        if self.tokens_per_step:
            speed["speed/tokens_per_s"] = steps_per_s * self.tokens_per_step
        return speed


def resource_metrics(devices: list | None = None) -> dict[str, float]:
    """Host RSS now and at peak (MiB), and device memory where the backend reports it.

    Device figures are summed over `devices` (default: local devices); CPU backends return
    no memory stats, and then no device keys appear (absent, not zero).
    """
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak_bytes = peak_kib if sys.platform == "darwin" else peak_kib * 1024
    metrics = {"memory/host_peak_rss_mib": peak_bytes / 2**20}
    try:
        import psutil

        metrics["memory/host_rss_mib"] = psutil.Process().memory_info().rss / 2**20
    except ImportError:
        pass
    stats = [d.memory_stats() for d in (devices or jax.local_devices())]
    stats = [s for s in stats if s]
    for key in ("bytes_in_use", "peak_bytes_in_use", "bytes_limit"):
        values = [s[key] for s in stats if key in s]
        if values:
            metrics[f"memory/device_{key}_mib"] = sum(values) / 2**20
    return metrics
