"""Objectives: train on "train", score on "valid"; never read "test".

`TrainingObjective` tunes an optax optimizer on a task. Numeric hyperparameters reach the
optimizer as traced arrays, so a new learning rate never recompiles; categorical ones (e.g.
`optimizer`) pick one compiled run per value. Its score is the tuning protocol of the benchmark:
the mean over seeds of the mean of the last `last_k` validation losses, +inf when any loss is
non-finite (a divergence):

    objective = TrainingObjective(models.get_task("digits_mlp"), optimizer="adam",
                                  num_steps=300, eval_every=50, seeds=(0, 1))
    value = objective({"learning_rate": 3e-3}, report=lambda step, loss: None)

Pruning: with `rungs=(0.25, 0.5, 1.0)` a trial first trains a quarter of the steps, reports its
validation losses (step = evaluation index 1, 2, ...) and goes on only if the pruner lets it;
each rung retrains from step 0 with the same seeds (identical first steps), so a surviving
trial costs sum(rungs) of a full run and a pruned one stops at its rung. One rung (the default)
is exactly one full run.

`MetaTrainingObjective` tunes meta-training: a short meta-training run per trial with the
trial's outer learning rate / PES sigma / truncation (unroll) length, scored by the
*validation* meta-loss (`meta.MetaObjective(split="valid")`) of fixed evaluation tasks,
reported every `eval_every` outer steps (so it prunes without retraining).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from learned_opt import training as train_loop

OPTIMIZER_KEY = "optimizer"


def optax_optimizer(name: str, hparams: Mapping[str, Any]) -> optax.GradientTransformation:
    """`optax.<name>(**hparams)`, e.g. optax_optimizer("adamw", {"learning_rate": 1e-3,
    "weight_decay": 1e-4}); a ValueError names an unknown optimizer or argument."""
    factory = getattr(optax, name, None)
    if not callable(factory) or name.startswith("_"):
        raise ValueError(f"unknown optax optimizer {name!r} (e.g. adam, adamw, sgd, lion)")
    try:
        return factory(**hparams)
    except TypeError as error:
        raise ValueError(f"optax.{name} does not take {sorted(hparams)}: {error}") from None


def validation_score(curves: train_loop.Curves, last_k: int) -> float:
    """Mean over seeds of the mean of the last `last_k` valid losses; +inf if anything diverged."""
    valid = np.asarray(curves.evals["valid"]["loss"], dtype=np.float64)
    train = np.asarray(curves.train_loss, dtype=np.float64)
    if not (np.all(np.isfinite(valid)) and np.all(np.isfinite(train))):
        return math.inf
    return float(valid[:, -last_k:].mean())


class TrainingObjective:
    """Validation loss of `optimizer` (an optax name, or a `make_tx(hparams)` function) on
    `task` after `num_steps` steps; see the module docstring.

    Args:
      task: a Task; only "train" and "valid" are read.
      optimizer: optax optimizer name, or `make_tx(hparams) -> GradientTransformation`; a trial
        parameter called "optimizer" overrides the name.
      fixed: hyperparameters passed to every trial (not searched).
      num_steps, eval_every, eval_batches, full_split_eval: of `training.make_run_fn`.
      seeds: training seeds averaged in the score.
      last_k: validation evaluations averaged in the score.
      rungs: fractions of `num_steps` trained before each pruning decision (last must be 1).
    """

    def __init__(self, task, optimizer: str | Callable = "adam", *,
                 fixed: Mapping[str, Any] | None = None, num_steps: int = 300,
                 eval_every: int = 50, eval_batches: int = 2, full_split_eval: bool = True,
                 seeds: Sequence[int] = (0, 1), last_k: int = 2,
                 rungs: Sequence[float] = (1.0,)):
        rung_steps = [int(round(r * num_steps)) for r in rungs]
        if (not rung_steps or rung_steps[-1] != num_steps or sorted(set(rung_steps)) != rung_steps
                or any(s <= 0 or s % eval_every for s in rung_steps)):
            raise ValueError(f"rungs {tuple(rungs)} must increase to 1.0, each a multiple of "
                             f"eval_every={eval_every} of num_steps={num_steps}")
        num_evals = num_steps // eval_every + 1
        if not 1 <= last_k <= num_evals:
            raise ValueError(f"last_k={last_k} must be in [1, {num_evals}] (the evaluations)")
        self.task, self.optimizer, self.fixed = task, optimizer, dict(fixed or {})
        self.eval_every, self.last_k, self.rung_steps = eval_every, last_k, rung_steps
        self.loop_kwargs = dict(eval_every=eval_every, eval_splits=("valid",),
                                eval_batches=eval_batches, full_split_eval=full_split_eval)
        self.keys = train_loop.seed_keys(list(seeds))
        self.num_seeds = len(seeds)
        self._runs: dict[tuple, Callable] = {}

    def make_tx(self, hparams: Mapping[str, Any]) -> optax.GradientTransformation:
        hparams = dict(hparams)
        name = hparams.pop(OPTIMIZER_KEY, self.optimizer)
        if callable(name):
            return name(hparams)
        return optax_optimizer(name, hparams)

    def run_fn(self, static: Mapping[str, Any], num_steps: int) -> Callable:
        """The compiled run for one value of the non-numeric hyperparameters (cached)."""
        key = (tuple(sorted(static.items())), num_steps)
        if key not in self._runs:
            self._runs[key] = train_loop.make_run_fn(
                self.task, lambda traced: self.make_tx({**static, **traced}),
                num_steps=num_steps, **self.loop_kwargs)
        return self._runs[key]

    def split(self, params: Mapping[str, Any]) -> tuple[dict, dict]:
        """(static, traced): floats become float32 arrays, everything else stays static."""
        merged = {**self.fixed, **params}
        traced = {k: jnp.float32(v) for k, v in merged.items()
                  if isinstance(v, float) and not isinstance(v, bool)}
        return {k: v for k, v in merged.items() if k not in traced}, traced

    def curves(self, params: Mapping[str, Any], num_steps: int) -> train_loop.Curves:
        static, traced = self.split(params)
        return jax.device_get(self.run_fn(static, num_steps)(traced, self.keys))

    def __call__(self, params: Mapping[str, Any], report: Callable[[int, float], None]):
        reported, cost = 0, 0
        for num_steps in self.rung_steps:
            curves = self.curves(params, num_steps)
            cost += num_steps * self.num_seeds
            valid = np.asarray(curves.evals["valid"]["loss"], dtype=np.float64).mean(axis=0)
            for index in range(max(reported, 1), len(valid)):
                report(index, float(valid[index]))
            reported = len(valid)
        return {"value": validation_score(curves, self.last_k), "cost_steps": cost}


class MetaTrainingObjective:
    """Validation meta-loss after a short meta-training run; see the module docstring.

    Args:
      base: the meta-training settings (keys of experiments/configs/meta_base.py: lopt,
        lopt_kwargs, family, group_index, estimator, sigma, num_tasks, unroll_length, truncation,
        min_horizon, max_horizon, normalize, loss_clip, outer_lr, grad_clip, seed); a trial's
        parameters override them by name.
      outer_steps: meta-training steps per trial.
      eval_every: outer steps between validation meta-loss reports.
      num_eval_tasks: fixed tasks (from `eval_seed`) the validation meta-loss averages over.
    """

    TUNABLE = ("outer_lr", "sigma", "unroll_length", "max_horizon", "num_tasks", "grad_clip")

    def __init__(self, base: Mapping[str, Any], *, outer_steps: int = 10, eval_every: int = 5,
                 num_eval_tasks: int = 8, eval_seed: int = 1234):
        if outer_steps <= 0 or eval_every <= 0 or outer_steps % eval_every:
            raise ValueError(f"outer_steps={outer_steps} must be a positive multiple of "
                             f"eval_every={eval_every}")
        self.base, self.outer_steps, self.eval_every = dict(base), outer_steps, eval_every
        self.num_eval_tasks, self.eval_seed = num_eval_tasks, eval_seed

    def _build(self, c: Mapping[str, Any]):
        import learned_opt as lo
        import models
        from learned_opt import meta

        lopt = lo.get_lopt(c["lopt"], **dict(c.get("lopt_kwargs") or {}))
        family = models.get_family(c["family"])
        groups = family.groups("meta_train")
        group = groups[max(int(c.get("group_index", 0)), 0) % len(groups)]
        unroll_length = int(c["unroll_length"])
        schedule = meta.get_schedule(c["truncation"], min_length=int(c["min_horizon"]),
                                     max_length=int(c["max_horizon"]))
        common = dict(lopt=lopt, unroll_length=unroll_length, remat=False)
        train_unroller = meta.TruncatedUnroller(
            family, group, schedule=schedule,
            objective=meta.MetaObjective("train", c["normalize"], c["loss_clip"]), **common)
        # The validation meta-loss unrolls the whole horizon in one segment from step 0.
        horizon = int(c["max_horizon"])
        valid_unroller = meta.TruncatedUnroller(
            family, group, lopt=lopt, unroll_length=horizon, remat=False,
            schedule=meta.ConstantSchedule(horizon),
            objective=meta.MetaObjective("valid", c["normalize"], c["loss_clip"]))
        estimator = meta.get_estimator(c["estimator"], sigma=float(c["sigma"]))
        trainer = meta.MetaTrainer(train_unroller, estimator, num_tasks=int(c["num_tasks"]),
                                   outer_tx=meta.default_outer_tx(float(c["outer_lr"]),
                                                                  float(c["grad_clip"])),
                                   mesh=meta.population_mesh(jax.devices()[:1]))
        return lopt, trainer, valid_unroller

    def __call__(self, params: Mapping[str, Any], report: Callable[[int, float], None]):
        from learned_opt import meta

        unknown = sorted(set(params) - set(self.base))
        if unknown:
            raise ValueError(f"meta-training has no setting(s) {unknown}; tunable: "
                             f"{self.TUNABLE}")
        c = {**self.base, **params}
        lopt, trainer, valid_unroller = self._build(c)
        theta = lopt.init(jax.random.key(int(c["seed"])))
        keys = jax.random.split(jax.random.key(self.eval_seed), self.num_eval_tasks)
        population = jax.vmap(lambda k: valid_unroller.new_trajectory(k, theta, 1))(keys)
        valid_meta_loss = jax.jit(
            lambda theta: meta.evaluate(valid_unroller, theta, population)["meta_loss"])
        state = trainer.init(jax.random.fold_in(jax.random.key(int(c["seed"])), 1), theta)
        value = math.nan
        for step in range(1, self.outer_steps + 1):
            state, _ = trainer.step(state)
            if step % self.eval_every == 0:
                value = float(valid_meta_loss(state.theta))
                report(step, value)
        inner_steps = self.outer_steps * trainer.total_tasks * int(c["unroll_length"])
        return {"value": value if math.isfinite(value) else math.inf,
                "cost_inner_steps": inner_steps,
                "num_skipped": int(jax.device_get(state.num_skipped))}
