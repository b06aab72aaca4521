"""Per-task tuning of the baselines (SGD, SGD + Nesterov momentum, Adam, AdamW) on `valid`.

Objective: the mean over tuning seeds of the mean of the last `last_k` validation losses, with
the same step budget the benchmark uses. A trial in which any seed's training or validation loss
is non-finite scores +inf (the worst). Search: Optuna's grid (log grid of learning rates, times a
log grid of weight decays for AdamW), random, or TPE sampler, over a study stored in SQLite in
the workdir, so an interrupted tuning run resumes and every trial stays inspectable.

Tuning can only read "train" and "valid": it calls the training loop with
`eval_splits=("valid",)`, and the training loop reads no other split.

    result = tune_baseline(models.get_task("digits_mlp"), "adam", TuningSpec(num_steps=300),
                           storage="sqlite:///workdir/optuna.db", study_name="digits_mlp/adam")
    result.best_hparams        # {"learning_rate": 0.00316...}
    tx = make_baseline("adam", result.best_hparams)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from learned_opt import training
from learned_opt.tasks import Task

# Nesterov's momentum is fixed, not tuned: the issue tunes learning rate (and AdamW's decay) only.
NESTEROV_MOMENTUM = 0.9


class Baseline(NamedTuple):
    """A hand-designed optimizer: its factory from hyperparameters and its search ranges.

    ranges: hyperparameter name -> (low, high), both searched on a log scale.
    """

    name: str
    make_tx: Callable[[Mapping[str, Any]], optax.GradientTransformation]
    ranges: Mapping[str, tuple[float, float]]


BASELINES: dict[str, Baseline] = {
    "sgd": Baseline("sgd", lambda h: optax.sgd(h["learning_rate"]),
                    {"learning_rate": (1e-3, 1.0)}),
    "nesterov": Baseline(
        "nesterov",
        lambda h: optax.sgd(h["learning_rate"], momentum=NESTEROV_MOMENTUM, nesterov=True),
        {"learning_rate": (1e-4, 1e-1 * 3.0)},
    ),
    "adam": Baseline("adam", lambda h: optax.adam(h["learning_rate"]),
                     {"learning_rate": (1e-4, 1e-1)}),
    "adamw": Baseline(
        "adamw",
        lambda h: optax.adamw(h["learning_rate"], weight_decay=h["weight_decay"]),
        {"learning_rate": (1e-4, 1e-1), "weight_decay": (1e-4, 1e-1)},
    ),
}
SAMPLERS = ("grid", "random", "tpe")


def list_baselines() -> list[str]:
    """Names accepted by `get_baseline` / `tune_baseline`."""
    return sorted(BASELINES)


def get_baseline(name: str) -> Baseline:
    """The baseline called `name`; a ValueError lists the valid names otherwise."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; valid baselines: {list_baselines()}")
    return BASELINES[name]


def make_baseline(name: str, hparams: Mapping[str, float]) -> optax.GradientTransformation:
    """The optax transform of baseline `name` with hyperparameters `hparams`."""
    baseline = get_baseline(name)
    missing = set(baseline.ranges) - set(hparams)
    if missing:
        raise ValueError(f"baseline {name!r} needs hyperparameters {sorted(missing)}")
    return baseline.make_tx(hparams)


@dataclasses.dataclass(frozen=True)
class TuningSpec:
    """How to tune: budget, seeds and search. Grids have `grid_points` log-spaced values per range
    (`weight_decay_points` for weight decay); random / TPE sample `num_trials` points.
    `full_split_eval`: evaluate on the whole validation split when the task offers it."""

    num_steps: int = 300
    eval_every: int = 50
    eval_batches: int = 2
    full_split_eval: bool = True
    last_k: int = 2
    seeds: tuple[int, ...] = (0, 1)
    sampler: str = "grid"
    grid_points: int = 6
    weight_decay_points: int = 2
    num_trials: int = 8
    sampler_seed: int = 0

    def __post_init__(self):
        if self.sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.sampler!r}; valid samplers: {SAMPLERS}")
        num_evals = self.num_steps // max(self.eval_every, 1) + 1
        if not 1 <= self.last_k <= num_evals:
            raise ValueError(f"last_k={self.last_k} must be in [1, {num_evals}] (the evaluations)")

    def digest(self) -> str:
        """Short hash of the spec: part of the study name, so a changed spec never reuses trials."""
        text = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:10]


def log_grid(low: float, high: float, points: int) -> list[float]:
    """`points` log-spaced values from `low` to `high` inclusive (one point: geometric mean)."""
    if points == 1:
        return [float(math.sqrt(low * high))]
    return [float(v) for v in np.geomspace(low, high, points)]


def search_grid(baseline: Baseline, spec: TuningSpec) -> dict[str, list[float]]:
    """The grid a grid search walks for `baseline`."""
    return {
        name: log_grid(low, high,
                       spec.weight_decay_points if name == "weight_decay" else spec.grid_points)
        for name, (low, high) in baseline.ranges.items()
    }


def validation_objective(curves: training.Curves, last_k: int) -> float:
    """Mean over seeds of the mean of the last `last_k` valid losses; +inf if anything diverged."""
    valid_loss = np.asarray(curves.evals["valid"]["loss"], dtype=np.float64)
    train_loss = np.asarray(curves.train_loss, dtype=np.float64)
    if not (np.all(np.isfinite(valid_loss)) and np.all(np.isfinite(train_loss))):
        return math.inf
    return float(valid_loss[:, -last_k:].mean())


def make_tuning_run_fn(task: Task, baseline: Baseline, spec: TuningSpec):
    """The compiled-once run function: hyperparameters are traced arrays, splits train + valid."""

    def make_tx(hparams):
        return baseline.make_tx(hparams)

    return training.make_run_fn(
        task, make_tx, num_steps=spec.num_steps, eval_every=spec.eval_every,
        eval_splits=("valid",), eval_batches=spec.eval_batches,
        full_split_eval=spec.full_split_eval,
    )


class TuningResult(NamedTuple):
    """best_hparams: the winner; trials: [(hparams, objective)] in trial order; at_edge: names of
    hyperparameters whose best value lies on the boundary of its range (widen the range)."""

    baseline: str
    best_hparams: dict[str, float]
    best_value: float
    trials: list[tuple[dict[str, float], float]]
    at_edge: list[str]
    study_name: str


def _sampler(baseline: Baseline, spec: TuningSpec):
    import optuna

    if spec.sampler == "grid":
        return optuna.samplers.GridSampler(search_grid(baseline, spec), seed=spec.sampler_seed)
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=spec.sampler_seed)
    return optuna.samplers.TPESampler(seed=spec.sampler_seed, n_startup_trials=4)


def _num_trials(baseline: Baseline, spec: TuningSpec) -> int:
    if spec.sampler == "grid":
        return int(np.prod([len(v) for v in search_grid(baseline, spec).values()]))
    return spec.num_trials


def _best_at_edge(baseline: Baseline, spec: TuningSpec, best: Mapping[str, float]) -> list[str]:
    """Hyperparameters whose best value sits in the outer 5% (log scale) of its range; a grid of
    fewer than 3 points has only edges, so it is never flagged."""
    grid = search_grid(baseline, spec)
    flagged = []
    for name, (low, high) in baseline.ranges.items():
        if spec.sampler == "grid" and len(grid[name]) < 3:
            continue
        position = math.log(best[name] / low) / math.log(high / low)
        if position <= 0.05 or position >= 0.95:
            flagged.append(name)
    return flagged


def tune_baseline(
    task: Task,
    baseline_name: str,
    spec: TuningSpec,
    *,
    storage: str | None,
    study_name: str,
    run_fn: Callable | None = None,
) -> TuningResult:
    """Tune `baseline_name` on `task`'s validation split; resumes a study of the same name.

    Args:
      task: the task (only its "train" and "valid" splits are read).
      baseline_name: one of `list_baselines()`.
      spec: budget, seeds and sampler.
      storage: an Optuna storage URL (`sqlite:///<workdir>/optuna.db`), or None for in-memory.
      study_name: identifies the task; the spec's digest and the baseline are appended.
      run_fn: a precompiled `make_tuning_run_fn(...)` to reuse (tests share one).

    Returns:
      TuningResult with the best hyperparameters and every completed trial.
    """
    import optuna

    baseline = get_baseline(baseline_name)
    run = run_fn or make_tuning_run_fn(task, baseline, spec)
    keys = training.seed_keys(spec.seeds)
    full_name = f"{study_name}/{baseline.name}/{spec.digest()}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=storage, study_name=full_name, direction="minimize",
                                sampler=_sampler(baseline, spec), load_if_exists=True)

    def objective(trial):
        hparams = {name: trial.suggest_float(name, low, high, log=True)
                   for name, (low, high) in baseline.ranges.items()}
        hparams_f32 = {name: jnp.float32(value) for name, value in hparams.items()}
        curves = jax.device_get(run(hparams_f32, keys))
        return validation_objective(curves, spec.last_k)

    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    remaining = _num_trials(baseline, spec) - len(done)
    if remaining > 0:
        study.optimize(objective, n_trials=remaining)
    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    trials = [(dict(t.params), float(t.value)) for t in completed]
    best_params, best_value = min(trials, key=lambda item: item[1])
    return TuningResult(baseline.name, best_params, best_value, trials,
                        _best_at_edge(baseline, spec, best_params), full_name)


def tune_all(
    task: Task,
    baseline_names: Sequence[str],
    spec: TuningSpec,
    *,
    storage: str | None,
    study_name: str,
) -> dict[str, TuningResult]:
    """`tune_baseline` for each name, in order."""
    return {name: tune_baseline(task, name, spec, storage=storage, study_name=study_name)
            for name in baseline_names}
