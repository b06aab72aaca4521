"""Task and TaskFamily protocols: what a learned optimizer is trained and evaluated on.

`learned_opt` defines these protocols; `models` implements them (datasets, networks, task
zoo). Meta-training sees only the protocol, so any object with these methods works.

A *task* is one training problem: how to initialize parameters, how to draw a batch, and the
loss of parameters on a batch. Everything is a pure function of arrays, so tasks can be
jitted, vmapped and differentiated through:

    task = models.get_task("digits_mlp")
    params = task.init(jax.random.key(0))
    batch = task.sample_batch(jax.random.key(1), "train")
    loss = task.loss(params, batch)

A *task family* is a distribution over tasks. To vmap a population of tasks, a family splits
a task into a **static group** (hashable Python value fixing every shape: widths, depth,
batch size, activation) and **dynamic task parameters** (a pytree of arrays: init scale,
data permutation key, noise level, ...). Tasks of one group share all shapes, so

    group = family.sample_group(key, subset="meta_train")         # Python value, not traced
    task_params = jax.vmap(lambda k: family.sample_task_params(k, group))(keys)
    def loss_of_one(task_params, params, batch):
        return family.make_task(group, task_params).loss(params, batch)
    jax.vmap(loss_of_one)(task_params, params_population, batches)

`family.sample(key)` draws a group and its task parameters in one call and returns a Task.
`subset` selects the fixed meta-training / held-out split of the family: held-out groups are
never returned for `subset="meta_train"`.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any, Literal, Protocol, runtime_checkable

import jax

PyTree = Any
Split = Literal["train", "valid", "test"]
SPLITS: tuple[str, ...] = ("train", "valid", "test")
Subset = Literal["meta_train", "heldout"]
SUBSETS: tuple[str, ...] = ("meta_train", "heldout")


@runtime_checkable
class Task(Protocol):
    """One training problem. All methods are pure and jittable (split is a static string)."""

    name: str

    def init(self, key: jax.Array) -> PyTree:
        """Initial parameters (a pytree of arrays)."""
        ...

    def loss(self, params: PyTree, batch: PyTree) -> jax.Array:
        """Scalar mean loss of `params` on `batch`."""
        ...

    def sample_batch(self, key: jax.Array, split: Split) -> PyTree:
        """A batch from `split` in {"train", "valid", "test"}, drawn on device inside jit."""
        ...


@runtime_checkable
class TaskFamily(Protocol):
    """A distribution over tasks, split into static shape groups and dynamic array parameters."""

    name: str

    def sample_group(self, key: jax.Array, subset: Subset = "meta_train") -> Hashable:
        """A static group (fixes every shape). Not traced: call outside jit."""
        ...

    def sample_task_params(self, key: jax.Array, group: Hashable) -> PyTree:
        """Dynamic per-task parameters (pytree of arrays) for `group`; jittable and vmappable."""
        ...

    def make_task(self, group: Hashable, task_params: PyTree) -> Task:
        """The task for `group` and (possibly traced) `task_params`."""
        ...

    def sample(self, key: jax.Array, subset: Subset = "meta_train") -> Task:
        """Draw a group and its task parameters; return the task."""
        ...


def check_split(split: str) -> None:
    """Raise a clear ValueError for a split name outside SPLITS."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")


def check_subset(subset: str) -> None:
    """Raise a clear ValueError for a family subset outside SUBSETS."""
    if subset not in SUBSETS:
        raise ValueError(f"unknown subset {subset!r}; expected one of {SUBSETS}")


def task_metrics(task: Task, params: PyTree, batch: PyTree) -> Mapping[str, jax.Array]:
    """`task.metrics(params, batch)` when the task has it (loss, accuracy, ...), else the loss."""
    metrics_fn = getattr(task, "metrics", None)
    if metrics_fn is not None:
        return metrics_fn(params, batch)
    return {"loss": task.loss(params, batch)}
