"""Ensemble members: tasks that train on chosen rows, and many members in one vmapped program.

A member is a network trained by `learned_opt.training.make_run_fn` on its own rows of the
training split: a bootstrap resample (bagging), a weighted resample (boosting), the training
folds of a k-fold split (stacking) or the first fraction of a fixed permutation (learning
curves). `ResampledTask` wraps any task with `full_split` so that `sample_batch(key, "train")`
draws only from those rows; every other split and every method delegates to the wrapped task.

    task = models.get_task("digits_mlp", hidden=(32,))
    train = make_member_trainer(task, lambda lr: optax.adam(lr), num_steps=200)
    indices_MN = bootstrap_indices(jax.random.key(0), num_train(task), num_members=5)
    params_M = train(jnp.float32(1e-2), member_keys(0, 5), indices_MN)   # leaves (5, ...)
    probs_MNC = member_outputs(task, params_M, "test", probs=True)        # (5, 300, 10)

All members of one call run in ONE jitted, vmapped program (not a Python loop of runs); the
trainer compiles once per member count and is reused for every later call of that shape.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from learned_opt import training
from learned_opt.tasks import check_split

PyTree = Any


def num_train(task) -> int:
    """Rows in `task`'s training split (needs `task.full_split`)."""
    _check_has_full_split(task)
    return int(task.full_split("train")["y"].shape[0])


def _check_has_full_split(task) -> None:
    if not hasattr(task, "full_split"):
        raise ValueError(f"task {task!r} has no full_split(split); ensemble members need the "
                         "whole training split to resample")


class ResampledTask:
    """`task` whose training batches come only from `indices` (rows of its train split).

    Args:
      task: a task with `full_split`, `init`, `loss` (and maybe `metrics`, `net`).
      indices: (N',) int rows of the train split (repeats allowed: a bootstrap resample).
      num_used: use only `indices[:num_used]` (an int or traced scalar, so subsets of different
        sizes share one compiled program); default all.
      weights: (N',) non-negative sampling weights over `indices` (boosting); default uniform.

    Batches are drawn with replacement, `task.batch_size` rows each, like the wrapped task.
    """

    def __init__(self, task, indices, *, num_used=None, weights=None):
        _check_has_full_split(task)
        self.task = task
        self.name = getattr(task, "name", "task")
        self.batch_size = task.batch_size
        self.indices = jnp.asarray(indices, jnp.int32)
        self.num_used = self.indices.shape[0] if num_used is None else num_used
        self.weights = None if weights is None else jnp.asarray(weights, jnp.float32)
        self._train = task.full_split("train")

    def __getattr__(self, name):
        # net, data, loss_kind, dataset_info ...: the wrapped task's.
        if name == "task":
            raise AttributeError(name)
        return getattr(self.task, name)

    def init(self, key):
        return self.task.init(key)

    def loss(self, params, batch):
        return self.task.loss(params, batch)

    def metrics(self, params, batch):
        if hasattr(self.task, "metrics"):
            return self.task.metrics(params, batch)
        return {"loss": self.task.loss(params, batch)}

    def full_split(self, split: str) -> dict:
        return self.task.full_split(split)

    def sample_batch(self, key, split: str = "train") -> dict:
        """Training rows from `indices` (uniform or by `weights`); other splits: the task's."""
        check_split(split)
        if split != "train":
            return self.task.sample_batch(key, split)
        if self.weights is None:
            position = jax.random.randint(key, (self.batch_size,), 0, self.num_used)
        else:
            position = jax.random.categorical(
                key, jnp.log(jnp.maximum(self.weights, 1e-30)), shape=(self.batch_size,))
        rows = self.indices[position]
        return {"x": self._train["x"][rows], "y": self._train["y"][rows]}


def bootstrap_indices(key: jax.Array, num_examples: int, num_members: int) -> jax.Array:
    """(M, N) rows drawn with replacement, one bootstrap resample of N rows per member."""
    if num_members < 1 or num_examples < 1:
        raise ValueError(f"num_members and num_examples must be positive; got {num_members}, "
                         f"{num_examples}")
    return jax.random.randint(key, (num_members, num_examples), 0, num_examples)


def member_keys(seed: int, num_members: int) -> jax.Array:
    """(M,) typed keys: members differ in init and batch order (seeds seed..seed+M-1)."""
    return training.seed_keys(list(range(seed, seed + num_members)))


def make_member_trainer(task, make_tx: Callable[[PyTree], Any], *, num_steps: int
                        ) -> Callable[..., PyTree]:
    """A jitted `train(tx_args, keys_M, indices_MN, weights_MN=None, num_used_M=None)`.

    Member m trains `task` for `num_steps` with `make_tx(tx_args)` on the rows `indices_MN[m]`
    (first `num_used_M[m]` of them, sampled by `weights_MN[m]` if given), from key
    `keys_M[m]`, through `training.make_run_fn`. Returns the final parameters with a leading
    member axis. `tx_args` is shared by all members (one optimizer per call).
    """

    def train_one(tx_args, key, indices, weights):
        member = ResampledTask(task, indices, weights=weights)
        run = training.make_run_fn(member, make_tx, num_steps=num_steps, eval_every=num_steps,
                                   eval_splits=(), keep_snapshots=True)
        curves = run(tx_args, key[None])
        return jax.tree.map(lambda leaf: leaf[0, -1], curves.snapshots), curves.train_loss[0]

    @jax.jit
    def train_all(tx_args, keys, indices, weights):
        # One program for every mode: uniform rows and subsets are weights of 1 and 0, so
        # bagging, boosting and k-fold fits of one member count share a compilation.
        return jax.vmap(train_one, in_axes=(None, 0, 0, 0))(tx_args, keys, indices, weights)

    def train(tx_args, keys_M, indices_MN, weights_MN=None, num_used_M=None):
        indices_MN = jnp.asarray(indices_MN, jnp.int32)
        num_members, num_rows = indices_MN.shape
        if keys_M.shape[0] != num_members:
            raise ValueError(f"keys_M has {keys_M.shape[0]} keys for {num_members} members")
        weights = (jnp.ones(indices_MN.shape, jnp.float32) if weights_MN is None
                   else jnp.asarray(weights_MN, jnp.float32))
        if weights.shape != indices_MN.shape:
            raise ValueError(f"weights_MN {weights.shape} must match indices_MN "
                             f"{indices_MN.shape}")
        if num_used_M is not None:
            used = jnp.arange(num_rows)[None] < jnp.asarray(num_used_M, jnp.int32)[:, None]
            weights = jnp.where(used, weights, 0.0)
        params, losses = train_all(tx_args, keys_M, indices_MN, weights)
        train.last_train_loss = losses  # (M, num_steps) minibatch losses of the last call
        return params

    train.last_train_loss = None
    return train


def member_outputs(task, params_M: PyTree, split: str, *, probs: bool = True) -> np.ndarray:
    """(M, N, C) outputs of every member on the whole `split`: class probabilities (softmax of
    the logits; a sigmoid output becomes [1 - p, p]) or, with `probs=False`, raw outputs
    (regression)."""
    check_split(split)
    x = task.full_split(split)["x"]
    # Not jitted: a new jit per call would recompile; the few ops of a forward pass run eagerly.
    outputs = jax.vmap(task.net.apply, in_axes=(0, None))(params_M, x)
    outputs = np.asarray(outputs, np.float64)
    if not probs:
        return outputs
    if outputs.shape[-1] == 1:
        positive = 1.0 / (1.0 + np.exp(-outputs[..., 0]))
        return np.stack([1 - positive, positive], axis=-1)
    outputs = outputs - outputs.max(axis=-1, keepdims=True)
    exp = np.exp(outputs)
    return exp / exp.sum(axis=-1, keepdims=True)


def stack_params(params_list: list[PyTree]) -> PyTree:
    """Members' parameter pytrees stacked on a new leading axis."""
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *params_list)


def take_members(params_M: PyTree, members) -> PyTree:
    """The members `members` (indices) of stacked parameters."""
    members = jnp.asarray(members, jnp.int32)
    return jax.tree.map(lambda leaf: leaf[members], params_M)
