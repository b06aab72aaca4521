"""Meta-gradient estimators behind one interface: TBPTT, antithetic ES and PES.

An estimator turns one task's truncated unroll into that task's contribution to the
meta-gradient; the population average of the contributions is the estimate (see
`aggregation.meta_grad`, and `sharding.sharded_meta_grad` over a device mesh):

    estimator = get_estimator("pes", sigma=0.01)
    est_state = estimator.init(theta, num_tasks)             # per-task state (PES accumulators)
    contribution = estimator.task_grad(unroller, theta, est_state_of_task, task_state)
    # over a population: reset first (`unroller.reset_population`), then pass `was_reset=`

* TBPTT: the exact gradient of the truncated objective, back-propagated through the K inner
  steps (each rematerialized unless `TruncatedUnroller.remat` is off). Biased across
  truncations: it ignores how theta shaped the state a segment starts from.
* ES (antithetic, Salimans et al. 2017): the gradient of the Gaussian-smoothed objective of the
  segment, `eps * (L(theta+eps) - L(theta-eps)) / (2 sigma^2)`. No backprop, robust to chaotic
  losses, but truncated: as biased across truncations as TBPTT.
* PES (Vicol et al. 2021): like ES, but each task keeps the sum `xi` of all perturbations of its
  trajectory so far and weights the segment's loss difference by `xi + eps`. The particles keep
  training with their own perturbed theta, so summed over a trajectory the estimate is unbiased
  for the smoothed objective of the *whole* trajectory.

Per-task randomness comes from the task's own keys (see population.py), so estimates do not
depend on how the population is laid out over devices.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from learned_opt.meta import population as pop_lib

PyTree = Any


class TaskGrad(NamedTuple):
    """One task's meta-gradient contribution and its new states."""

    grad: PyTree
    est_state: PyTree
    task_state: pop_lib.TaskState
    metrics: dict


def _perturbation(theta: PyTree, key: jax.Array, sigma: float) -> PyTree:
    leaves, treedef = jax.tree.flatten(theta)
    keys = jax.random.split(key, len(leaves))
    return treedef.unflatten([sigma * jax.random.normal(k, jnp.shape(x), jnp.float32)
                              for k, x in zip(keys, leaves, strict=True)])


def _reset(unroller, theta, task_state, was_reset):
    """The task state to unroll: reset here when finished, unless the caller already reset
    it (`was_reset` given, e.g. by `TruncatedUnroller.reset_population` over a population)."""
    if was_reset is None:
        return unroller.reset_finished(theta, task_state)
    return task_state, was_reset


def _forward_only(unroller):
    """`unroller` for an estimator that never differentiates the unroll (ES, PES): remat
    (`TruncatedUnroller.remat`) changes nothing computed there, but vmapping its checkpointed
    scan body costs tracing time (measured: 3.3-4.4 -> 2.3-2.4 s per mnist1d-MLP group for PES)."""
    return (dataclasses.replace(unroller, remat=False) if getattr(unroller, "remat", False)
            else unroller)


def _task_metrics(objective: jax.Array, was_reset: jax.Array, metrics: dict) -> dict:
    return {"meta_loss": jnp.mean(objective), "num_resets": was_reset.astype(jnp.int32),
            **metrics}


@dataclasses.dataclass(frozen=True)
class TBPTT:
    """Truncated backpropagation through time (one particle per task)."""

    name = "tbptt"
    num_particles = 1
    backpropagates = True  # differentiates through the unroll (see MetaTrainer's compile options)

    def init(self, theta: PyTree, num_tasks: int) -> PyTree:
        del theta
        return jnp.zeros((num_tasks,), jnp.float32)  # stateless; one placeholder entry per task

    def task_grad(self, unroller, theta, est_state, task_state, was_reset=None) -> TaskGrad:
        task_state, was_reset = _reset(unroller, theta, task_state, was_reset)

        def objective(th):
            thetas = jax.tree.map(lambda x: x[None], th)
            objectives, new_state, metrics = unroller.unroll(thetas, task_state)
            return objectives[0], (new_state, metrics)

        (value, (new_state, metrics)), grad = jax.value_and_grad(objective, has_aux=True)(theta)
        return TaskGrad(grad, est_state, new_state, _task_metrics(value, was_reset, metrics))

    def population_grads(self, unroller, theta, est_state, population):
        """The sum of `task_grad` over a population, as one gradient of the summed objective.

        Same result as summing per-task gradients, but the backward pass reduces theta's
        cotangent over the tasks as it goes instead of carrying one per task (measured ~20%
        faster for MLPLOpt on the regression-MLP setup of experiments/bench_meta.py).
        Returns (grad sum, est_state, population, metric sums).
        """
        population, was_reset = unroller.reset_population(theta, population)

        def total(th):
            thetas = jax.tree.map(lambda x: x[None], th)
            objectives, new_state, metrics = jax.vmap(lambda s: unroller.unroll(thetas, s))(
                population)
            return jnp.sum(objectives[:, 0]), (objectives[:, 0], new_state, metrics)

        (_, (values, new_state, metrics)), grad_sum = jax.value_and_grad(
            total, has_aux=True)(theta)
        metrics = jax.vmap(_task_metrics)(values, was_reset, metrics)
        return grad_sum, est_state, new_state, {k: jnp.sum(v, axis=0) for k, v in metrics.items()}


@dataclasses.dataclass(frozen=True)
class ES:
    """Antithetic evolution strategies on each truncated segment."""

    sigma: float = 0.01
    name = "es"
    num_particles = 2
    backpropagates = False

    def __post_init__(self):
        if not self.sigma > 0:
            raise ValueError(f"ES sigma must be positive, got {self.sigma}")

    def init(self, theta: PyTree, num_tasks: int) -> PyTree:
        del theta
        return jnp.zeros((num_tasks,), jnp.float32)

    def task_grad(self, unroller, theta, est_state, task_state, was_reset=None) -> TaskGrad:
        task_state, was_reset = _reset(unroller, theta, task_state, was_reset)
        eps = _perturbation(theta, pop_lib.perturbation_key(task_state), self.sigma)
        thetas = jax.tree.map(lambda t, e: jnp.stack([t + e, t - e]), theta, eps)
        objectives, new_state, metrics = _forward_only(unroller).unroll(thetas, task_state)
        weight = (objectives[0] - objectives[1]) / (2 * self.sigma**2)
        grad = jax.tree.map(lambda e: weight * e, eps)
        return TaskGrad(grad, est_state, new_state, _task_metrics(objectives, was_reset, metrics))


@dataclasses.dataclass(frozen=True)
class PES:
    """Persistent evolution strategies, antithetic; state: per-task perturbation sums `xi`."""

    sigma: float = 0.01
    name = "pes"
    num_particles = 2
    backpropagates = False

    def __post_init__(self):
        if not self.sigma > 0:
            raise ValueError(f"PES sigma must be positive, got {self.sigma}")

    def init(self, theta: PyTree, num_tasks: int) -> PyTree:
        return jax.tree.map(lambda x: jnp.zeros((num_tasks,) + jnp.shape(x), jnp.float32), theta)

    def task_grad(self, unroller, theta, est_state, task_state, was_reset=None) -> TaskGrad:
        task_state, was_reset = _reset(unroller, theta, task_state, was_reset)
        # A new trajectory starts with no accumulated perturbation.
        accumulated = jax.tree.map(lambda a: jnp.where(was_reset, 0.0, a), est_state)
        eps = _perturbation(theta, pop_lib.perturbation_key(task_state), self.sigma)
        # The +particle's inner state has seen theta + accumulated; it continues with theta + eps.
        thetas = jax.tree.map(lambda t, e: jnp.stack([t + e, t - e]), theta, eps)
        objectives, new_state, metrics = _forward_only(unroller).unroll(thetas, task_state)
        accumulated = jax.tree.map(jnp.add, accumulated, eps)
        weight = (objectives[0] - objectives[1]) / (2 * self.sigma**2)
        grad = jax.tree.map(lambda a: weight * a, accumulated)
        return TaskGrad(grad, accumulated, new_state,
                        _task_metrics(objectives, was_reset, metrics))


ESTIMATORS = {"tbptt": TBPTT, "es": ES, "pes": PES}


def get_estimator(name: str, **kwargs):
    """Estimator `name` in ("tbptt", "es", "pes"); `sigma=` for ES/PES."""
    if name not in ESTIMATORS:
        raise ValueError(f"unknown estimator {name!r}; valid: {sorted(ESTIMATORS)}")
    if name == "tbptt":
        kwargs.pop("sigma", None)
    return ESTIMATORS[name](**kwargs)
