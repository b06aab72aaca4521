"""Per-task tuning, once for both protocols: one set of trials, a winner per protocol.

Each trial trains the task at one hyperparameter setting on the tuning seeds, with the step
budget of the benchmark, and scores it by each protocol's objective (`OBJECTIVES`):
  * optimization:   the mean over seeds of the final smoothed TRAINING loss (trailing mean of the
                    last `smoothing_window` minibatch losses): VeLO / Celo's tuning target;
  * generalization: the mean over seeds of the mean of the last `last_k` VALIDATION losses.
A trial in which any seed's training (or, when read, validation) loss is non-finite scores +inf
(the worst) on both. The grid is walked once; each protocol picks its own winner from the same
trials, so tuning for both protocols costs what tuning for one does.

Splits: tuning runs the training loop with `eval_splits=spec.eval_splits`: `()` when only the
optimization protocol is asked for (only "train" is read), `("valid",)` otherwise. "test" is
never read here.

Search: through `experiments.automl` (`automl.study.run_study` over an `automl.space`
SearchSpace: see `search_space`), with Optuna's grid (log grid of `grid_points` values per
range, `weight_decay_points` for weight decay), random or TPE sampler (`num_trials` points).
The study's value is the first protocol's objective (what TPE models); every protocol's
objective is a trial attribute ("objectives"), from which each protocol picks its winner. The
study is stored where `storage` says (SQLite in the benchmark's workdir), so an interrupted run
resumes and every trial stays inspectable.

    tunable = Tunable("adam", lambda h: optax.adam(h["learning_rate"]),
                      {"learning_rate": (1e-4, 1e-1)})
    result = tune(task, tunable, TuningSpec(num_steps=300), storage=None, study_name="digits")
    result.best["optimization"]       # {"learning_rate": 0.0316...}
    result.best["generalization"]     # {"learning_rate": 0.00316...}
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments.benchmarking import metrics as bm
from learned_opt import training
from learned_opt.tasks import Task

PROTOCOLS = ("optimization", "generalization")
OBJECTIVES = {"optimization": "final smoothed training loss",
              "generalization": "mean of the last last_k validation losses"}
SAMPLERS = ("grid", "random", "tpe")


class Tunable(NamedTuple):
    """What tuning needs of an optimizer: `make_tx(hparams)` (hparams: name -> traced float32)
    and its search ranges, name -> (low, high), searched on a log scale."""

    name: str
    make_tx: Callable[[Mapping[str, Any]], optax.GradientTransformation]
    ranges: Mapping[str, tuple[float, float]]


@dataclasses.dataclass(frozen=True)
class TuningSpec:
    """How to tune: budget, seeds, search and which protocols' winners to pick.

    The loop settings (num_steps ... full_split_eval) are the benchmark's, so a winner is tuned
    under exactly the conditions it is later benchmarked in. A budget of zero trials is an error:
    an optimizer that should not be tuned belongs in the self-tuning track.
    """

    num_steps: int = 300
    eval_every: int = 50
    eval_batches: int = 2
    full_split_eval: bool = True
    smoothing_window: int = 20
    last_k: int = 2
    seeds: tuple[int, ...] = (0, 1)
    sampler: str = "grid"
    grid_points: int = 6
    weight_decay_points: int = 2
    num_trials: int = 8
    sampler_seed: int = 0
    protocols: tuple[str, ...] = PROTOCOLS

    def __post_init__(self):
        if self.sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.sampler!r}; valid samplers: {SAMPLERS}")
        bad = [p for p in self.protocols if p not in PROTOCOLS]
        if bad or not self.protocols:
            raise ValueError(f"protocols {self.protocols!r}: expected some of {PROTOCOLS}")
        budget = {"grid": ("grid_points", "weight_decay_points")}.get(self.sampler,
                                                                       ("num_trials",))
        for name in budget:
            if getattr(self, name) < 1:
                raise ValueError(f"tuning budget {name}={getattr(self, name)} with sampler "
                                 f"{self.sampler!r}: a tuned track needs at least 1 trial (the "
                                 "self-tuning track is the 0-trial one)")
        if not self.seeds:
            raise ValueError("tuning seeds: need at least one")
        if self.smoothing_window < 1:
            raise ValueError(f"smoothing_window must be >= 1, got {self.smoothing_window}")
        num_evals = self.num_steps // max(self.eval_every, 1) + 1
        if not 1 <= self.last_k <= num_evals:
            raise ValueError(f"last_k={self.last_k} must be in [1, {num_evals}] (the evaluations)")

    @property
    def eval_splits(self) -> tuple[str, ...]:
        """The splits tuning evaluates besides "train": "valid" only for generalization."""
        return ("valid",) if "generalization" in self.protocols else ()

    def digest(self) -> str:
        """Short hash of the spec: part of the study name, so a changed spec never reuses trials."""
        text = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:10]


def log_grid(low: float, high: float, points: int) -> list[float]:
    """`points` log-spaced values from `low` to `high` inclusive (one point: geometric mean)."""
    if points == 1:
        return [float(math.sqrt(low * high))]
    return [float(v) for v in np.geomspace(low, high, points)]


def search_grid(tunable: Tunable, spec: TuningSpec) -> dict[str, list[float]]:
    """The grid a grid search walks for `tunable`."""
    return {
        name: log_grid(low, high,
                       spec.weight_decay_points if name == "weight_decay" else spec.grid_points)
        for name, (low, high) in tunable.ranges.items()
    }


def num_trials(tunable: Tunable, spec: TuningSpec) -> int:
    """How many trials tuning `tunable` under `spec` runs."""
    if spec.sampler == "grid":
        return int(np.prod([len(v) for v in search_grid(tunable, spec).values()]))
    return spec.num_trials


def _finite_train(curves) -> bool:
    return bool(np.all(np.isfinite(np.asarray(curves.train_loss, dtype=np.float64))))


def training_objective(curves: training.Curves, window: int) -> float:
    """Mean over seeds of the final smoothed training loss; +inf if any training loss diverged."""
    train_loss = np.asarray(curves.train_loss, dtype=np.float64)
    if not _finite_train(curves):
        return math.inf
    return float(np.mean([bm.smooth(seed, window)[-1] for seed in train_loss]))


def validation_objective(curves: training.Curves, last_k: int) -> float:
    """Mean over seeds of the mean of the last `last_k` valid losses; +inf if anything diverged."""
    valid_loss = np.asarray(curves.evals["valid"]["loss"], dtype=np.float64)
    if not (np.all(np.isfinite(valid_loss)) and _finite_train(curves)):
        return math.inf
    return float(valid_loss[:, -last_k:].mean())


def objective_values(curves: training.Curves, spec: TuningSpec) -> dict[str, float]:
    """{protocol: objective} of one trial's curves, for `spec.protocols`."""
    values = {}
    if "optimization" in spec.protocols:
        values["optimization"] = training_objective(curves, spec.smoothing_window)
    if "generalization" in spec.protocols:
        values["generalization"] = validation_objective(curves, spec.last_k)
    return values


def make_tuning_run_fn(task: Task, tunable: Tunable, spec: TuningSpec):
    """The compiled-once run function: hyperparameters are traced arrays; splits as the spec."""
    return training.make_run_fn(
        task, tunable.make_tx, num_steps=spec.num_steps, eval_every=spec.eval_every,
        eval_splits=spec.eval_splits, eval_batches=spec.eval_batches,
        full_split_eval=spec.full_split_eval)


class TuningResult(NamedTuple):
    """best / best_value / at_edge: per protocol, the winner, its objective and the names of its
    hyperparameters on the boundary of their range (widen it); trials: [(hparams, {protocol:
    objective})] in trial order."""

    name: str
    best: dict[str, dict[str, float]]
    best_value: dict[str, float]
    trials: list[tuple[dict[str, float], dict[str, float]]]
    at_edge: dict[str, list[str]]
    study_name: str


def search_space(tunable: Tunable, spec: TuningSpec):
    """`tunable`'s ranges as an `experiments.automl` SearchSpace: log-scale floats, carrying the
    benchmark's grid (`search_grid`) for the grid sampler."""
    from experiments.automl.space import Float, SearchSpace

    grid = search_grid(tunable, spec) if spec.sampler == "grid" else {}
    return SearchSpace({name: Float(low, high, log=True, grid=grid.get(name))
                        for name, (low, high) in tunable.ranges.items()})


def _best_at_edge(tunable: Tunable, spec: TuningSpec, best: Mapping[str, float]) -> list[str]:
    """Hyperparameters whose best value sits in the outer 5% (log scale) of its range; a grid of
    fewer than 3 points has only edges, so it is never flagged."""
    grid = search_grid(tunable, spec)
    flagged = []
    for name, (low, high) in tunable.ranges.items():
        if spec.sampler == "grid" and len(grid[name]) < 3:
            continue
        position = math.log(best[name] / low) / math.log(high / low)
        if position <= 0.05 or position >= 0.95:
            flagged.append(name)
    return flagged


def tune(
    task: Task,
    tunable: Tunable,
    spec: TuningSpec,
    *,
    storage: str | None,
    study_name: str,
    run_fn: Callable | None = None,
) -> TuningResult:
    """Tune `tunable` on `task` for every protocol of `spec`; resumes a study of the same name.

    Args:
      task: the task (only "train", and "valid" for generalization, are read).
      tunable: the optimizer and its ranges.
      spec: budget, seeds, sampler and protocols.
      storage: an Optuna storage URL (`sqlite:///<workdir>/optuna.db`), or None for in-memory.
      study_name: identifies the task; the tunable's name and the spec's digest are appended.
      run_fn: a precompiled `run(hparams, keys) -> Curves` to reuse (the benchmark shares one
        with its final runs; it must evaluate no split beyond `spec.eval_splits`).

    Returns:
      TuningResult with each protocol's winner and every completed trial.
    """
    from experiments.automl import samplers as automl_samplers
    from experiments.automl import study as automl_study

    if not tunable.ranges:
        raise ValueError(f"{tunable.name} has nothing to tune (no ranges)")
    run = run_fn or make_tuning_run_fn(task, tunable, spec)
    keys = training.seed_keys(spec.seeds)
    full_name = f"{study_name}/{tunable.name}/{spec.digest()}"

    def objective(hparams, report):
        curves = run({name: jnp.float32(value) for name, value in hparams.items()}, keys)
        values = objective_values(jax.device_get(curves._replace(snapshots=None)), spec)
        return {"value": values[spec.protocols[0]], "objectives": values}

    space = search_space(tunable, spec)
    result = automl_study.run_study(
        objective, space, sampler=automl_samplers.make_sampler(
            spec.sampler, space, seed=spec.sampler_seed, startup_trials=4),
        budget=automl_study.Budget(num_trials(tunable, spec)), storage=storage,
        study_name=full_name, progress=False)
    trials = [(dict(t.params), {p: float(t.attrs["objectives"][p]) for p in spec.protocols})
              for t in result.trials if t.state == "COMPLETE"]
    best, best_value, at_edge = {}, {}, {}
    for protocol in spec.protocols:
        params, values = min(trials, key=lambda item, p=protocol: item[1][p])
        best[protocol], best_value[protocol] = params, values[protocol]
        at_edge[protocol] = _best_at_edge(tunable, spec, params)
    return TuningResult(tunable.name, best, best_value, trials, at_edge, full_name)
