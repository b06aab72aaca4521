"""The one wall-clock timer of the measurement commands: medians of repeated, synchronised calls.

    seconds = median_seconds(jitted_step, params, batch, repeats=10)   # first call not timed
    times = time_calls(jitted_step, params, batch, repeats=10)         # every timed call

Each call is synchronised with `jax.block_until_ready`, so asynchronous dispatch never makes a
call look faster than it is. The first call compiles (and warms caches) and is never timed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np


def time_calls(fn: Callable[..., Any], *args, repeats: int, warmup: int = 1) -> list[float]:
    """Wall seconds of `repeats` synchronised calls `fn(*args)`, after `warmup` untimed calls."""
    if repeats <= 0:
        raise ValueError(f"repeats must be positive, got {repeats}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return times


def median_seconds(fn: Callable[..., Any], *args, repeats: int = 5, warmup: int = 1) -> float:
    """Median wall seconds of `repeats` synchronised calls `fn(*args)` (see `time_calls`)."""
    return float(np.median(time_calls(fn, *args, repeats=repeats, warmup=warmup)))
