"""Synthetic optimization problems: noisy ill-conditioned quadratics and Rosenbrock.

These have no dataset; the "batch" is the noise of one stochastic gradient evaluation, so the
train split is noisy and the valid / test splits evaluate the exact (noise-free) objective:

    task = QuadraticTask(dim=16, log10_condition=2.0, noise_std=0.1)
    params = task.init(jax.random.key(0))                 # {"x": (16,)}
    loss = task.loss(params, task.sample_batch(key, "train"))

All constructor arguments except `dim` / `batch_size` may be traced arrays (families vmap them).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from learned_opt.tasks import check_split


def quadratic_rotation(data_key: jax.Array, dim: int) -> jax.Array:
    """The random rotation Q of `QuadraticTask(dim, data_key=data_key)`: the Q of the QR
    factorisation of a standard normal (dim, dim) matrix drawn from the first half of
    `jax.random.split(data_key)`."""
    rotation_key, _ = jax.random.split(data_key)
    return jnp.linalg.qr(jax.random.normal(rotation_key, (dim, dim)))[0]


class QuadraticTask:
    """f(x) = mean_b 0.5 * sum_i lambda_i * (Q (x - x_star - noise_b))_i^2.

    Eigenvalues lambda are log-spaced from 1 to 10**log10_condition; Q is a random rotation
    (so the problem is not axis-aligned, which would flatter per-coordinate optimizers) and
    x_star a random N(0, 1) optimum, both fixed by `data_key`. Train batches carry
    N(0, noise_std^2) perturbations of the target; valid / test batches carry zeros, so their
    loss is the exact objective (minimum 0 at x_star).

    Args:
      dim: number of parameters (static).
      log10_condition: log10 of the condition number.
      noise_std: standard deviation of the target noise on the train split.
      init_scale: std of the N(0, init_scale^2) initial x.
      batch_size: noise samples averaged per loss evaluation (static).
      data_key: typed key fixing Q and x_star.
      rotate: use a random rotation Q (True) or the identity.
      rotation: Q itself, precomputed as `quadratic_rotation(data_key, dim)` (a QR), so that
        a task rebuilt from the same parameters at every meta-training step does not redo
        it; None: computed here from `data_key` (the same matrix).
    """

    def __init__(
        self,
        dim: int = 16,
        *,
        log10_condition: jax.Array | float = 2.0,
        noise_std: jax.Array | float = 0.1,
        init_scale: jax.Array | float = 1.0,
        batch_size: int = 8,
        data_key: jax.Array | None = None,
        rotate: bool = True,
        rotation: jax.Array | None = None,
        name: str = "quadratic",
    ):
        if dim < 1 or batch_size < 1:
            raise ValueError(f"dim and batch_size must be >= 1; got {dim}, {batch_size}")
        self.name = name
        self.dim = int(dim)
        self.batch_size = int(batch_size)
        self.noise_std = noise_std
        self.init_scale = init_scale
        data_key = jax.random.key(0) if data_key is None else data_key
        _, optimum_key = jax.random.split(data_key)
        self.eigenvalues = 10.0 ** (jnp.linspace(0.0, 1.0, self.dim) * log10_condition)
        if not rotate:
            self.rotation = jnp.eye(dim)
        elif rotation is not None:
            if jnp.shape(rotation) != (dim, dim):
                raise ValueError(f"rotation must have shape ({dim}, {dim}), got "
                                 f"{jnp.shape(rotation)}")
            self.rotation = rotation
        else:
            self.rotation = quadratic_rotation(data_key, dim)
        self.x_star = jax.random.normal(optimum_key, (dim,))

    def init(self, key: jax.Array) -> dict:
        """{"x": N(0, init_scale^2) of shape (dim,)}."""
        return {"x": self.init_scale * jax.random.normal(key, (self.dim,))}

    def sample_batch(self, key: jax.Array, split: str = "train") -> dict:
        """{"noise": (batch_size, dim)}: Gaussian on train, zeros on valid / test."""
        check_split(split)
        shape = (self.batch_size, self.dim)
        if split == "train":
            return {"noise": self.noise_std * jax.random.normal(key, shape)}
        return {"noise": jnp.zeros(shape)}

    def loss(self, params: dict, batch: dict) -> jax.Array:
        """Mean over the batch of the rotated, scaled squared distance to the (noisy) optimum."""
        delta_BD = params["x"][None, :] - self.x_star[None, :] - batch["noise"]
        rotated_BD = delta_BD @ self.rotation.T
        return jnp.mean(0.5 * jnp.sum(self.eigenvalues * rotated_BD**2, axis=-1))

    def metrics(self, params: dict, batch: dict) -> dict:
        return {"loss": self.loss(params, batch)}

    def dataset_info(self) -> dict:
        return {"name": "synthetic_quadratic", "dim": self.dim, "batch_size": self.batch_size}


class RosenbrockTask:
    """Chained Rosenbrock: sum_i 100 (x_{i+1} - x_i^2)^2 + (1 - x_i)^2, minimum 0 at all ones.

    The classic start (-1.2, 1, -1.2, 1, ...) plus N(0, init_scale^2) jitter. Train batches add
    N(0, noise_std^2) to x before evaluating (a stochastic objective when noise_std > 0).
    """

    def __init__(
        self,
        dim: int = 2,
        *,
        noise_std: jax.Array | float = 0.0,
        init_scale: jax.Array | float = 0.1,
        name: str = "rosenbrock",
    ):
        if dim < 2:
            raise ValueError(f"Rosenbrock needs dim >= 2; got {dim}")
        self.name = name
        self.dim = int(dim)
        self.noise_std = noise_std
        self.init_scale = init_scale

    def init(self, key: jax.Array) -> dict:
        start = jnp.where(jnp.arange(self.dim) % 2 == 0, -1.2, 1.0)
        return {"x": start + self.init_scale * jax.random.normal(key, (self.dim,))}

    def sample_batch(self, key: jax.Array, split: str = "train") -> dict:
        """{"noise": (dim,)}: Gaussian on train, zeros on valid / test."""
        check_split(split)
        if split == "train":
            return {"noise": self.noise_std * jax.random.normal(key, (self.dim,))}
        return {"noise": jnp.zeros((self.dim,))}

    def loss(self, params: dict, batch: dict) -> jax.Array:
        x = params["x"] + batch["noise"]
        return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)

    def metrics(self, params: dict, batch: dict) -> dict:
        return {"loss": self.loss(params, batch)}

    def dataset_info(self) -> dict:
        return {"name": "synthetic_rosenbrock", "dim": self.dim}
