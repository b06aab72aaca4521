"""The population meta-gradient: per-task contributions of an estimator summed over a
population of tasks, or over a `Mixture` of populations (one per static shape group).

    grad, est_state, population, metrics = meta_grad(estimator, unroller, theta, est_state,
                                                     population)
    mixture = Mixture((unroller_a, unroller_b))     # two shape groups, one theta
    grad, est_states, populations, metrics = meta_grad(estimator, mixture, theta,
                                                       (est_a, est_b), (population_a, population_b))
    scores = evaluate(unroller, theta, population)   # forward only, no meta-gradient

Everything here runs on one device; `learned_opt.meta.sharding` splits the same sums over a
device mesh. A mixture's populations and estimator states are plain tuples (one entry per
group, in the mixture's order): that is the pytree the trainer carries and checkpoints.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from learned_opt.meta import population as pop_lib

PyTree = Any

# The unroll settings every group of a mixture must share (all but the family and group).
SHARED_FIELDS = ("lopt", "unroll_length", "schedule", "objective", "remat")


@dataclasses.dataclass(frozen=True)
class Mixture:
    """Several shape groups (or task families) meta-training one theta: one unroller per group,
    each with its own vmapped sub-population.

        mixture = Mixture(tuple(TruncatedUnroller(family, g, lopt, unroll_length=20,
                                                  schedule=schedule) for g in groups))

    Raises (at construction) a TypeError for a member that is not a `TruncatedUnroller`, and a
    ValueError when there is none or when the members differ in any of `SHARED_FIELDS`.
    """

    unrollers: tuple[pop_lib.TruncatedUnroller, ...]

    def __post_init__(self):
        unrollers = tuple(self.unrollers)
        object.__setattr__(self, "unrollers", unrollers)
        if not unrollers:
            raise ValueError("a mixture needs at least one unroller")
        for u in unrollers:
            if not isinstance(u, pop_lib.TruncatedUnroller):
                raise TypeError(f"a mixture holds TruncatedUnrollers, got {type(u).__name__}")
        for name in SHARED_FIELDS:
            values = [getattr(u, name) for u in unrollers]
            if any(v != values[0] for v in values):
                raise ValueError(f"the unrollers of a mixture must share {name}; got {values}")

    def __len__(self) -> int:
        return len(self.unrollers)

    def __iter__(self) -> Iterator[pop_lib.TruncatedUnroller]:
        return iter(self.unrollers)


def as_mixture(unroller):
    """`unroller` itself (one `TruncatedUnroller`, or already a `Mixture`), or the `Mixture`
    of a sequence (tuple / list) of unrollers."""
    if isinstance(unroller, Sequence):
        return Mixture(tuple(unroller))
    return unroller


def num_population_tasks(population) -> int:
    """Tasks in a population, or in all sub-populations of a mixture (a tuple)."""
    groups = (population,) if isinstance(population, pop_lib.TaskState) else population
    return sum(jax.tree.leaves(p.step)[0].shape[0] for p in groups)


def _group_task_grads(estimator, unroller, theta, est_state, population):
    if hasattr(estimator, "population_grads"):
        return estimator.population_grads(unroller, theta, est_state, population)

    population, was_reset = unroller.reset_population(theta, population)

    def one_task(est_task_state, task_state, task_was_reset):
        return estimator.task_grad(unroller, theta, est_task_state, task_state,
                                   was_reset=task_was_reset)

    out = jax.vmap(one_task)(est_state, population, was_reset)
    grad_sum = jax.tree.map(lambda g: jnp.sum(g, axis=0), out.grad)
    metric_sums = {k: jnp.sum(v, axis=0) for k, v in out.metrics.items()}
    return grad_sum, out.est_state, out.task_state, metric_sums


def population_task_grads(estimator, unroller, theta, est_state, population):
    """Sum over the tasks given of their meta-gradient contributions (and metric sums).

    `unroller` is one `TruncatedUnroller`, or a `Mixture` of them (a tuple of unrollers is
    taken as one): then `est_state` and `population` are tuples, one sub-population per group,
    each vmapped on its own, and the sums run over every task of every group. The metric sums
    then also hold `meta_loss_group{i}`, scaled so that dividing by the total task count
    gives group i's mean.
    """
    unroller = as_mixture(unroller)
    if not isinstance(unroller, Mixture):
        return _group_task_grads(estimator, unroller, theta, est_state, population)
    if not len(unroller) == len(est_state) == len(population):
        raise ValueError(f"a mixture of {len(unroller)} groups needs as many sub-populations "
                         f"and estimator states, got {len(population)} and {len(est_state)}")
    outs = [_group_task_grads(estimator, u, theta, e, p)
            for u, e, p in zip(unroller, est_state, population, strict=True)]
    grad_sum = jax.tree.map(lambda *g: sum(g), *[out[0] for out in outs])
    sums = {k: sum(out[3][k] for out in outs) for k in outs[0][3]}
    total = num_population_tasks(population)
    for i, (out, group_population) in enumerate(zip(outs, population, strict=True)):
        share = total / num_population_tasks(group_population)
        sums[f"meta_loss_group{i}"] = out[3]["meta_loss"] * share
    return (grad_sum, tuple(out[1] for out in outs), tuple(out[2] for out in outs), sums)


def meta_grad(estimator, unroller, theta, est_state, population):
    """Population-mean meta-gradient on one device: (grad, est_state, population, metrics).

    Metrics are population means, except the counters `num_resets` and `num_nonfinite`
    (totals). For a mixture, the mean runs over every task of every group. See
    `learned_opt.meta.sharding` for the same over a device mesh.
    """
    num_tasks = num_population_tasks(population)
    grad_sum, est_state, population, sums = population_task_grads(
        estimator, unroller, theta, est_state, population)
    return (jax.tree.map(lambda g: g / num_tasks, grad_sum), est_state, population,
            finalize_metrics(sums, num_tasks))


def evaluate(unroller, theta, population) -> dict:
    """Forward-only metrics of one unroll of every task under `theta` (no meta-gradient).

    `population`: single-particle task states (e.g. `unroller.new_trajectory(k, theta, 1)`
    vmapped); nothing is reset. Returns population means of `meta_loss` and `train_loss`
    (what `meta_grad` reports) and the total `num_nonfinite`, at the cost of the forward pass
    only: use it to score a theta, e.g. before and after meta-training on fixed tasks.
    """
    thetas = jax.tree.map(lambda x: x[None], theta)
    objectives, _, metrics = jax.vmap(lambda s: unroller.unroll(thetas, s))(population)
    return {"meta_loss": jnp.mean(objectives), "train_loss": jnp.mean(metrics["train_loss"]),
            "num_nonfinite": jnp.sum(metrics["num_nonfinite"])}


def finalize_metrics(sums: dict, num_tasks: int) -> dict:
    """Population sums -> means (counters stay totals)."""
    return {k: v if k.startswith("num_") else v / num_tasks for k, v in sums.items()}
