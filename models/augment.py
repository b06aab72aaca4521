"""Reparameterisation augmentation: a task family whose tasks train rescaled parameters.

Each task draws a global factor `s`, log-uniform in `[min_scale, max_scale]`, and trains
`params' = s * params` with the loss `loss'(params') = loss(params' / s)`: the same function
of the same network, so the loss at the initial parameters (and along any trajectory of
`params' / s`) is unchanged, but every parameter is `s` times larger and every gradient `s`
times smaller. A learned optimizer meta-trained on it cannot memorise the parameter scale of
its meta-training tasks (Celo2's task augmentation, Moudgil et al. 2026).

    family = ReparamFamily(models.get_family("digits_mlp"), min_scale=1e-3, max_scale=1e3)
    group = family.sample_group(key)                       # the wrapped family's groups
    task = family.make_task(group, family.sample_task_params(key, group))
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


class ReparamTask:
    """`task` with its parameters multiplied by `scale` (a scalar, possibly traced)."""

    def __init__(self, task, scale: jax.Array):
        self.task = task
        self.scale = scale
        self.name = f"reparam_{task.name}"

    def init(self, key: jax.Array) -> Any:
        return jax.tree.map(lambda p: p * self.scale.astype(p.dtype), self.task.init(key))

    def unscaled(self, params: Any) -> Any:
        """The wrapped task's parameters for these (rescaled) ones."""
        return jax.tree.map(lambda p: p / self.scale.astype(p.dtype), params)

    def loss(self, params: Any, batch: Any) -> jax.Array:
        return self.task.loss(self.unscaled(params), batch)

    def metrics(self, params: Any, batch: Any) -> dict:
        metrics_fn = getattr(self.task, "metrics", None)
        if metrics_fn is None:
            return {"loss": self.loss(params, batch)}
        return metrics_fn(self.unscaled(params), batch)

    def sample_batch(self, key: jax.Array, split: str = "train") -> Any:
        return self.task.sample_batch(key, split)

    def __repr__(self) -> str:
        return f"ReparamTask({self.task!r})"


class ReparamFamily:
    """`family` with reparameterisation augmentation (see module docstring).

    Groups (and the meta-train / held-out split) are the wrapped family's; task parameters
    are the wrapped family's plus `log_scale`.

    Args:
      family: the TaskFamily to wrap.
      min_scale, max_scale: range of the log-uniform global factor (0 < min <= max).
    """

    def __init__(self, family, min_scale: float = 1e-3, max_scale: float = 1e3):
        if not 0 < min_scale <= max_scale:
            raise ValueError(f"ReparamFamily needs 0 < min_scale <= max_scale; got "
                             f"min_scale={min_scale}, max_scale={max_scale}")
        self.family = family
        self.min_scale, self.max_scale = float(min_scale), float(max_scale)
        self.name = f"reparam_{family.name}"

    def groups(self, subset: str = "meta_train") -> tuple:
        return self.family.groups(subset)

    def sample_group(self, key: jax.Array, subset: str = "meta_train"):
        return self.family.sample_group(key, subset)

    def sample_task_params(self, key: jax.Array, group) -> dict:
        k_inner, k_scale = jax.random.split(key)
        log_scale = jax.random.uniform(k_scale, (), minval=jnp.log(self.min_scale),
                                       maxval=jnp.log(self.max_scale))
        return {"inner": self.family.sample_task_params(k_inner, group), "log_scale": log_scale}

    def make_task(self, group, task_params: dict) -> ReparamTask:
        return ReparamTask(self.family.make_task(group, task_params["inner"]),
                           jnp.exp(task_params["log_scale"]))

    def sample(self, key: jax.Array, subset: str = "meta_train") -> ReparamTask:
        k_group, k_params = jax.random.split(key)
        group = self.sample_group(k_group, subset)
        return self.make_task(group, self.sample_task_params(k_params, group))

    def __repr__(self) -> str:
        return f"ReparamFamily({self.family.name}, [{self.min_scale:g}, {self.max_scale:g}])"
