"""A tiny quadratic task family implementing the TaskFamily protocol, for meta-training tests.

Loss: 0.5 * sum(h * (x - c)**2) + noise * <z, x>, with curvatures h = exp(log_h) and center c
drawn per task, and z ~ N(0, I) the "batch" (gradient noise). Group = (dim,) fixes shapes.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class QuadraticTask(NamedTuple):
    dim: int
    log_h: jax.Array
    center: jax.Array
    noise: float
    nan_loss: bool = False

    name = "toy_quadratic"

    def init(self, key):
        return {"x": jax.random.normal(key, (self.dim,))}

    def loss(self, params, batch):
        x = params["x"]
        loss = 0.5 * jnp.sum(jnp.exp(self.log_h) * (x - self.center) ** 2) + self.noise * jnp.dot(
            batch, x)
        return loss * jnp.nan if self.nan_loss else loss

    def sample_batch(self, key, split):
        del split
        return jax.random.normal(key, (self.dim,))


class QuadraticFamily:
    name = "toy_quadratic"

    def __init__(self, dim: int = 4, noise: float = 0.1, log_h_range=(-1.0, 1.0),
                 nan_loss: bool = False):
        self.dim, self.noise, self.log_h_range = dim, noise, log_h_range
        self.nan_loss = nan_loss  # every loss is NaN: a task that always diverges

    def sample_group(self, key, subset="meta_train"):
        del key, subset
        return (self.dim,)

    def sample_task_params(self, key, group):
        k1, k2 = jax.random.split(key)
        lo, hi = self.log_h_range
        return {"log_h": jax.random.uniform(k1, group, minval=lo, maxval=hi),
                "center": jax.random.normal(k2, group)}

    def make_task(self, group, task_params):
        return QuadraticTask(group[0], task_params["log_h"], task_params["center"], self.noise,
                             self.nan_loss)

    def sample(self, key, subset="meta_train"):
        group = self.sample_group(key, subset)
        return self.make_task(group, self.sample_task_params(key, group))
