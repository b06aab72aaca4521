"""Truncation schedules: how long each inner training trajectory runs before its task is reset.

A schedule draws a horizon (number of inner steps) per task at every reset, inside jit. Horizons
are rounded up to a multiple of the unroll length so a reset only ever happens between two
unroll segments: a segment never straddles two trajectories, which keeps PES exact.

    schedule = get_schedule("log_uniform", min_length=50, max_length=1000)
    horizon = schedule.sample(key)          # int32 scalar
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class ConstantSchedule:
    """Every trajectory runs `length` inner steps."""

    length: int

    def __post_init__(self):
        if int(self.length) <= 0:
            raise ValueError(f"ConstantSchedule length must be positive, got {self.length}")

    @property
    def max_length(self) -> int:
        return int(self.length)

    def sample(self, key: jax.Array) -> jax.Array:
        del key
        return jnp.asarray(self.length, jnp.int32)


@dataclasses.dataclass(frozen=True)
class LogUniformSchedule:
    """Horizons drawn log-uniformly in [min_length, max_length]: many short, some long runs."""

    min_length: int
    max_length: int

    def __post_init__(self):
        if not 0 < int(self.min_length) <= int(self.max_length):
            raise ValueError(f"LogUniformSchedule needs 0 < min_length <= max_length, got "
                             f"{self.min_length}, {self.max_length}")

    def sample(self, key: jax.Array) -> jax.Array:
        lo, hi = math.log(self.min_length), math.log(self.max_length)
        log_h = jax.random.uniform(key, (), jnp.float32, lo, hi)
        return jnp.clip(jnp.round(jnp.exp(log_h)), self.min_length, self.max_length).astype(
            jnp.int32)


SCHEDULES = ("constant", "log_uniform")


def get_schedule(name: str, *, min_length: int, max_length: int):
    """Schedule `name` in SCHEDULES; "constant" uses `max_length`."""
    if name == "constant":
        return ConstantSchedule(max_length)
    if name == "log_uniform":
        return LogUniformSchedule(min_length, max_length)
    raise ValueError(f"unknown truncation schedule {name!r}; valid: {SCHEDULES}")


def round_up(horizon: jax.Array, unroll_length: int) -> jax.Array:
    """`horizon` rounded up to a positive multiple of `unroll_length`."""
    segments = jnp.maximum((horizon + unroll_length - 1) // unroll_length, 1)
    return (segments * unroll_length).astype(jnp.int32)
