"""Truncated inner training of one task, the unit a vmapped population is made of.

A task's state carries everything its inner training needs between outer steps: the task
parameters drawn from the family, the inner params and optimizer state of each *particle*
(1 for TBPTT; 2 for antithetic ES/PES, which train the same task with theta +/- a perturbation
on the same batches), the step within the trajectory, its horizon, the loss scale used by the
meta-objective, and keys. An outer step unrolls `unroll_length` inner steps of every task;
tasks past their horizon (or diverged) are first replaced by a freshly sampled task.

    unroller = TruncatedUnroller(family, group, lopt, unroll_length=20,
                                 schedule=ConstantSchedule(200), objective=MetaObjective())
    state = unroller.init_task(key, theta, num_particles=1)    # one task; vmap for a population
    state, was_reset = unroller.reset_finished(theta, state)   # population: reset_population
    objective, state, metrics = unroller.unroll(theta[None], state)    # thetas: one per particle

Keys are derived from the task's own trajectory key and step, never from its position in the
population, so the same task computes the same numbers on 1 device, 8 devices or 2 processes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from learned_opt import policy
from learned_opt.meta import truncation
from learned_opt.meta.objectives import MetaObjective
from parallel import remat

PyTree = Any

# Sub-streams of a step key: which random draw it feeds.
_TRAIN_BATCH, _VALID_BATCH, _PERTURBATION = 0, 1, 2


class InnerState(NamedTuple):
    """Inner training state of one particle."""

    params: PyTree
    opt_state: PyTree
    diverged: jax.Array  # bool: a non-finite loss or update was seen; params are frozen since


class TaskState(NamedTuple):
    """One task of the population. `inner` leaves carry a leading particle axis."""

    task_params: PyTree
    inner: InnerState
    step: jax.Array        # int32 inner steps taken in this trajectory
    horizon: jax.Array     # int32 length of this trajectory (a multiple of unroll_length)
    loss_scale: jax.Array  # float32 meta-objective normalizer of this trajectory
    traj_key: jax.Array    # typed key of this trajectory (batches, perturbations)
    key: jax.Array         # typed key the next trajectory is drawn from


def step_key(traj_key: jax.Array, step: jax.Array, stream: int) -> jax.Array:
    """Key of one random draw at trajectory step `step` (stream: batch / perturbation)."""
    return jax.random.fold_in(jax.random.fold_in(traj_key, step), stream)


def segment_batches(task, state: TaskState, split: str, first: int, count: int) -> PyTree:
    """The `split` batches of trajectory steps `state.step + first + i`, i < count, stacked
    on a leading axis: exactly the batches `task.sample_batch` draws one by one from each
    step's key, drawn in one batched call before a segment's inner steps.

    Measured (PES, MLPLOpt, the regression-MLP setup of experiments/bench_meta.py): drawing
    the batch inside each inner step ran ~500 extra XLA kernel launches per step (on CPU the
    threefry hash is a 5-iteration loop of ~100 small kernels), ~15% of the outer step's
    kernel time. Costs `count` batches of memory per task.
    """
    stream = _TRAIN_BATCH if split == "train" else _VALID_BATCH
    steps = state.step + first + jnp.arange(count)
    return jax.vmap(lambda step: task.sample_batch(step_key(state.traj_key, step, stream),
                                                   split))(steps)


def perturbation_key(state: TaskState) -> jax.Array:
    """Key of the theta perturbation an ES / PES estimator draws for `state`'s next segment
    (from the task's own trajectory key and step, like its batches)."""
    return step_key(state.traj_key, state.step, _PERTURBATION)


def _tree_where(cond: jax.Array, on_true: PyTree, on_false: PyTree) -> PyTree:
    return jax.tree.map(lambda a, b: jnp.where(cond, a, b), on_true, on_false)


def _all_finite(tree: PyTree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
              if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


INNER_SCHEDULES = policy.HORIZON_SCHEDULES


@dataclasses.dataclass(frozen=True)
class TruncatedUnroller:
    """Static description of truncated inner training for tasks of one family group.

    Attributes:
      family: a TaskFamily (learned_opt.tasks protocol).
      group: the static shape group all tasks of the population share.
      lopt: the learned optimizer being meta-trained.
      unroll_length: inner steps per outer step (K).
      schedule: truncation schedule (horizons are rounded up to multiples of K).
      objective: the meta-objective.
      remat: checkpoint each inner step (policy "full"), so TBPTT keeps only each step's
        carried state, not its intermediates. Default on: on the regression-MLP setup of
        experiments/bench_meta.py (MLPLOpt, 8 tasks) it cut the compiled outer step's
        temporary memory from 43 to 9.5 MiB at K=20 (161 to 24 MiB at K=80: what remains
        grows only with the carried state), and turning it off saved no measurable
        time (the recompute is small next to the backward pass). Set False only for short
        unrolls of small tasks where memory does not matter.
      inner_schedule: the inner learning rate over each trajectory (`policy.horizon_schedule`):
        "constant" (the optimizer's nominal step size throughout; no `learning_rate` is
        passed) or "warmup_cosine" over the trajectory's horizon, peaking at the nominal step
        size, so the rule is meta-trained the way it is run with a schedule.
    """

    family: Any
    group: Hashable
    lopt: Any
    unroll_length: int
    schedule: Any
    objective: MetaObjective = MetaObjective()
    remat: bool = True
    inner_schedule: str = "constant"

    def __post_init__(self):
        if int(self.unroll_length) <= 0:
            raise ValueError(f"unroll_length must be positive, got {self.unroll_length}")
        if self.inner_schedule not in INNER_SCHEDULES:
            raise ValueError(f"unknown inner_schedule {self.inner_schedule!r}; valid choices: "
                             f"{list(INNER_SCHEDULES)}")

    @property
    def lopt_num_steps(self) -> int | None:
        """The horizon given to `lopt.optimizer` (only for optimizers that require one)."""
        return self.schedule.max_length if getattr(self.lopt, "needs_num_steps", False) else None

    def optimizer(self, theta: PyTree, horizon: jax.Array | None = None
                  ) -> optax.GradientTransformationExtraArgs:
        """The inner optimizer of a trajectory of `horizon` steps (needed by a scheduled
        `inner_schedule`; the state it initialises does not depend on it)."""
        if self.inner_schedule == "constant" or horizon is None:
            return self.lopt.optimizer(theta, num_steps=self.lopt_num_steps)
        rate = policy.horizon_schedule(self.inner_schedule, self.lopt.nominal_step_size(theta),
                                       horizon)
        return self.lopt.optimizer(theta, num_steps=self.lopt_num_steps, learning_rate=rate)

    # ---- trajectories -------------------------------------------------------------------

    def new_trajectory(self, key: jax.Array, theta: PyTree, num_particles: int,
                       stagger: bool = False) -> TaskState:
        """A freshly sampled task at step 0. `stagger` shortens the first trajectory at random
        (to a multiple of K) so a population's resets are spread over time."""
        k_params, k_init, k_horizon, k_stagger, k_traj, k_next = jax.random.split(key, 6)
        task_params = self.family.sample_task_params(k_params, self.group)
        task = self.family.make_task(self.group, task_params)
        params = task.init(k_init)
        opt_state = self.optimizer(theta).init(params)
        horizon = truncation.round_up(self.schedule.sample(k_horizon), self.unroll_length)
        if stagger:
            num_segments = horizon // self.unroll_length
            horizon = self.unroll_length * jax.random.randint(k_stagger, (), 1, num_segments + 1)
        inner = InnerState(params, opt_state, jnp.asarray(False))
        inner = jax.tree.map(lambda x: jnp.broadcast_to(x, (num_particles,) + x.shape), inner)
        # The loss scale is filled in by the first unroll (see `trajectory_scale`), which builds
        # the task anyway: building it here too would double the cost of task construction
        # (e.g. a data-subset permutation) for every outer step, reset or not.
        return TaskState(task_params, inner, jnp.zeros((), jnp.int32), horizon.astype(jnp.int32),
                         jnp.full((), jnp.nan, jnp.float32), k_traj, k_next)

    def init_task(self, key: jax.Array, theta: PyTree, num_particles: int) -> TaskState:
        """The first trajectory of one population slot (staggered)."""
        return self.new_trajectory(key, theta, num_particles, stagger=True)

    @staticmethod
    def is_finished(state: TaskState) -> jax.Array:
        """Whether the task reached its horizon or diverged (bool; vmap for a population)."""
        return (state.step >= state.horizon) | jnp.any(state.inner.diverged)

    def reset_finished(self, theta: PyTree, state: TaskState) -> tuple[TaskState, jax.Array]:
        """Replace the task by a fresh one when it reached its horizon or diverged.

        Under vmap the fresh task is computed for every task, finished or not; for a
        population use `reset_population`, which computes it only for the finished ones.
        """
        num_particles = jax.tree.leaves(state.inner.diverged)[0].shape[0]
        done = self.is_finished(state)
        fresh = self.new_trajectory(state.key, theta, num_particles)
        return _tree_where(done, fresh, state), done

    def reset_population(self, theta: PyTree, population: TaskState
                         ) -> tuple[TaskState, jax.Array]:
        """`reset_finished` of every task of a population (task axis first), same result.

        A fresh trajectory (sampling task parameters, e.g. a data-subset permutation, and
        initialising the task) is built only for the tasks that finished, one at a time in a
        `while_loop`: at a given outer step few tasks finish (horizons are staggered), so most
        steps build none, where the vmapped `reset_finished` builds one for every task at
        every step. Returns (population, was_reset per task).
        """
        done = jax.vmap(self.is_finished)(population)
        num_particles = jax.tree.leaves(population.inner.diverged)[0].shape[1]

        def reset_one(carry):
            population, pending = carry
            i = jnp.argmax(pending)
            old = jax.tree.map(lambda x: x[i], population)
            fresh = self.new_trajectory(old.key, theta, num_particles)
            population = jax.tree.map(lambda x, f: x.at[i].set(f), population, fresh)
            return population, pending.at[i].set(False)

        population, _ = jax.lax.while_loop(lambda carry: jnp.any(carry[1]), reset_one,
                                           (population, done))
        return population, done

    # ---- the unroll ---------------------------------------------------------------------

    def trajectory_scale(self, task, state: TaskState) -> jax.Array:
        """The meta-objective normalizer of the task's trajectory: computed from the loss at
        its start on the first unroll of a trajectory (step 0), carried afterwards."""
        def initial_scale():
            params = jax.tree.map(lambda x: x[0], state.inner.params)  # particles start equal
            first_batch = task.sample_batch(step_key(state.traj_key, 0, _TRAIN_BATCH), "train")
            return self.objective.scale(task.loss(params, first_batch))
        return jnp.where(state.step == 0, initial_scale(), state.loss_scale)

    def unroll_particle(self, task, theta: PyTree, state: TaskState, inner: InnerState):
        """K inner steps of one particle of `task` with meta-parameters `theta`.

        `state.loss_scale` must already be the trajectory's scale (see `trajectory_scale`).
        Returns (meta-objective, new inner state, (mean train loss, newly diverged)).
        """
        tx = self.optimizer(theta, state.horizon)
        objective = self.objective
        length = self.unroll_length
        # Step k trains on train batch k and (valid objective) scores on valid batch k + 1;
        # train batch `length` scores the final params of a train objective.
        on_valid = objective.split == "valid"
        train_batches = segment_batches(task, state, "train", 0, length + (not on_valid))
        valid_batches = segment_batches(task, state, "valid", 1, length) if on_valid else None

        def inner_step(carry: InnerState, batches):
            train_batch, valid_batch = batches
            loss, grads = jax.value_and_grad(task.loss)(carry.params, train_batch)
            updates, opt_state = tx.update(grads, carry.opt_state, carry.params, value=loss)
            params = optax.apply_updates(carry.params, updates)
            ok = jnp.isfinite(loss) & _all_finite(params)
            diverged = carry.diverged | ~ok
            # A diverged particle is frozen: its later terms are capped by the objective.
            new = InnerState(_tree_where(diverged, carry.params, params),
                             _tree_where(diverged, carry.opt_state, opt_state), diverged)
            if objective.split == "valid":
                valid_loss = task.loss(new.params, valid_batch)
                term = objective.term(valid_loss, state.loss_scale, diverged)
            else:
                term = jnp.zeros(())  # filled from the next step's train loss below
            return new, (loss, carry.diverged, term)

        # prevent_cse=False is safe inside scan and lets XLA share work across the recompute.
        body = remat.checkpoint(inner_step, "full" if self.remat else "none", prevent_cse=False)
        final, (losses, diverged_before, valid_terms) = jax.lax.scan(
            body, inner, (jax.tree.map(lambda b: b[:length], train_batches), valid_batches))
        if objective.split == "valid":
            terms = valid_terms
        else:
            # Term k is the train loss of the params after step k: the loss the next step
            # computes anyway, plus one evaluation of the final params on the next batch.
            last = task.loss(final.params, jax.tree.map(lambda b: b[length], train_batches))
            terms = objective.term(jnp.concatenate([losses[1:], last[None]]), state.loss_scale,
                                   jnp.concatenate([diverged_before[1:], final.diverged[None]]))
        finite = jnp.isfinite(losses) & ~diverged_before
        mean_loss = jnp.sum(jnp.where(finite, losses, 0.0)) / jnp.maximum(jnp.sum(finite), 1)
        newly_diverged = final.diverged & ~inner.diverged
        return jnp.mean(terms), final, (mean_loss, newly_diverged)

    def unroll(self, thetas: PyTree, state: TaskState) -> tuple[jax.Array, TaskState, dict]:
        """Unroll every particle of one task; `thetas` has a leading particle axis.

        Returns (objective per particle, new task state, metrics of this task).
        """
        # The task is built once and shared by the particles (they train the same task).
        task = self.family.make_task(self.group, state.task_params)
        state = state._replace(loss_scale=self.trajectory_scale(task, state))
        objectives, inner, (mean_loss, newly_diverged) = jax.vmap(
            lambda theta, inner: self.unroll_particle(task, theta, state, inner))(
                thetas, state.inner)
        state = state._replace(inner=inner, step=state.step + self.unroll_length)
        metrics = {"train_loss": jnp.mean(mean_loss),
                   "num_nonfinite": jnp.sum(newly_diverged).astype(jnp.int32)}
        return objectives, state, metrics
