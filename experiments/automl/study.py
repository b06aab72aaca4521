"""Studies: storage in the workdir, the trial loop with its budget, pruning and coarse-to-fine.

An objective is a plain function of the trial's parameters and a `report` callback; it never
sees Optuna:

    def objective(params, report):
        for step in range(4):
            loss = train_a_bit(params)          # e.g. a validation loss
            report(step, loss)                  # may raise optuna.TrialPruned (the pruner's call)
        return loss                             # or {"value": loss, "cost_steps": 400, ...}

    result = search(objective, space, sampler="tpe", budget=Budget(32),
                    storage=storage_for(workdir), study_name=study_key("digits/adam", space))
    result.best_params, result.best_value, result.num_pruned

- Storage: `storage_for(workdir)` is SQLite in the workdir (resumable: running the same search
  again continues the study and re-runs no finished trial); `storage_for(workdir, "journal")`
  is Optuna's journal file, which several worker processes can share (each runs its own trials).
- Budget: `Budget(num_trials, timeout_s)`; finished trials (complete, pruned, failed) count
  against it, across resumptions and workers. A grid needs a budget of at least its size.
- An objective that returns NaN makes a FAILED trial (counted, never the best); +inf is a
  complete trial with the worst value (a diverged run). Exceptions listed in `catch` fail
  the trial; any other exception stops the search (a bug is not a bad hyperparameter).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import optuna
from optuna.trial import TrialState
from tqdm import tqdm

from experiments.automl import pruners as pruners_lib
from experiments.automl import samplers as samplers_lib
from experiments.automl.space import SearchSpace, narrow

STORAGES = ("sqlite", "journal", "memory")
SEARCHES = (*samplers_lib.SAMPLERS, "coarse_to_fine")
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)

Objective = Callable[[dict[str, Any], Callable[[int, float], None]], Any]


@dataclasses.dataclass(frozen=True)
class Budget:
    """How much searching: `num_trials` finished trials, and optionally `timeout_s` of wall time
    per call (a resumed call gets the time again; the trial count is global)."""

    num_trials: int
    timeout_s: float | None = None

    def __post_init__(self):
        if not isinstance(self.num_trials, int) or self.num_trials < 1:
            raise ValueError(f"budget num_trials must be a positive int, got {self.num_trials!r}")
        if self.timeout_s is not None and not self.timeout_s > 0:
            raise ValueError(f"budget timeout_s must be positive or None, got {self.timeout_s}")


class TrialRecord(NamedTuple):
    """One trial read back: state is "COMPLETE", "PRUNED", "FAIL" or "RUNNING"."""

    number: int
    params: dict[str, Any]
    value: float | None
    state: str
    intermediate: dict[int, float]
    attrs: dict[str, Any]


class StudyResult(NamedTuple):
    """best_params / best_value: of the complete trials (None / inf when there are none)."""

    study_name: str
    best_params: dict[str, Any] | None
    best_value: float
    trials: list[TrialRecord]
    num_complete: int
    num_pruned: int
    num_failed: int

    def values_in_order(self) -> list[float]:
        """Each finished trial's value in trial order (pruned: last reported; failed: NaN)."""
        values = []
        for t in self.trials:
            if t.state == "RUNNING":
                continue
            if t.value is not None:
                values.append(t.value)
            elif t.intermediate:
                values.append(t.intermediate[max(t.intermediate)])
            else:
                values.append(math.nan)
        return values


def storage_for(workdir: str | Path | None, kind: str = "sqlite"):
    """The Optuna storage of a workdir: `sqlite:///<workdir>/optuna.db`, a JournalStorage on
    `<workdir>/optuna.journal` (for parallel workers), or None (in memory)."""
    if kind not in STORAGES:
        raise ValueError(f"unknown storage {kind!r}; valid storages: {STORAGES}")
    if kind == "memory" or workdir is None:
        return None
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    if kind == "sqlite":
        return f"sqlite:///{workdir / 'optuna.db'}"
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(str(workdir / "optuna.journal")))


def digest(settings: Mapping[str, Any]) -> str:
    """Short hash of JSON-able settings."""
    text = json.dumps(dict(settings), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def study_key(prefix: str, space: SearchSpace, **settings) -> str:
    """`prefix/<space digest>/<settings digest>`: a changed space, sampler, seed or objective
    setting never resumes another setup's study."""
    return f"{prefix}/{space.digest()}/{digest(settings)}"


def _record(trial: optuna.trial.FrozenTrial) -> TrialRecord:
    value = None if trial.value is None else float(trial.value)
    return TrialRecord(trial.number, dict(trial.params), value, trial.state.name,
                       {int(k): float(v) for k, v in trial.intermediate_values.items()},
                       dict(trial.user_attrs))


def read_result(study: optuna.Study) -> StudyResult:
    """A study's trials and best complete trial."""
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    records = [_record(t) for t in trials if t.state != TrialState.WAITING]
    complete = [r for r in records if r.state == "COMPLETE"]
    sign = 1.0 if study.direction == optuna.study.StudyDirection.MINIMIZE else -1.0
    best = min(complete, key=lambda r: sign * r.value) if complete else None
    count = lambda state: sum(r.state == state for r in records)  # noqa: E731
    return StudyResult(study.study_name, None if best is None else best.params,
                       sign * math.inf if best is None else best.value, records,
                       count("COMPLETE"), count("PRUNED"), count("FAIL"))


def _trial_objective(objective: Objective, space: SearchSpace):
    def run_trial(trial: optuna.Trial) -> float:
        params = space.suggest(trial)

        def report(step: int, value: float) -> None:
            value = float(value)
            trial.report(value if math.isfinite(value) else math.inf, int(step))
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at step {step} (value {value:.4g})")

        start = time.perf_counter()
        outcome = objective(params, report)
        trial.set_user_attr("wall_s", time.perf_counter() - start)
        if isinstance(outcome, Mapping):
            for key, item in outcome.items():
                if key != "value":
                    trial.set_user_attr(key, item)
            outcome = outcome["value"]
        return float(outcome)

    return run_trial


def run_study(
    objective: Objective,
    space: SearchSpace,
    *,
    sampler: str | optuna.samplers.BaseSampler = "tpe",
    budget: Budget,
    storage=None,
    study_name: str,
    pruner: str | optuna.pruners.BasePruner = "none",
    direction: str = "minimize",
    seed: int = 0,
    grid_points: int = 5,
    sampler_kwargs: Mapping[str, Any] | None = None,
    catch: tuple[type[Exception], ...] = (),
    progress: bool = True,
) -> StudyResult:
    """Run (or resume) `study_name` until `budget.num_trials` trials have finished.

    Args:
      objective: `objective(params, report) -> value` (see the module docstring).
      space: the search space.
      sampler: a name of `samplers.SAMPLERS` or an Optuna sampler.
      budget: trials (and wall time) to spend.
      storage: `storage_for(...)`, an Optuna storage URL, or None (in memory).
      study_name: the study (see `study_key`); resumed when it exists in `storage`.
      pruner: a name of `pruners.PRUNERS` or an Optuna pruner.
      direction: "minimize" or "maximize".
      seed, grid_points, sampler_kwargs: passed to `samplers.make_sampler`.
      catch: exception types that fail a trial instead of stopping the search.
      progress: show a tqdm bar over trials.

    Raises:
      ValueError: a budget below the grid's number of points, an unknown sampler / pruner /
        direction.
    """
    if direction not in ("minimize", "maximize"):
        raise ValueError(f"direction must be 'minimize' or 'maximize', got {direction!r}")
    num_trials = budget.num_trials
    if isinstance(sampler, str):
        if sampler == "grid":
            size = space.grid_size(grid_points)
            if num_trials < size:
                raise ValueError(f"budget num_trials={num_trials} is below the grid's {size} "
                                 f"points; raise it to {size}, lower grid_points, or use a "
                                 f"random / tpe sampler")
            num_trials = size
        sampler = samplers_lib.make_sampler(sampler, space, seed=seed, grid_points=grid_points,
                                            **dict(sampler_kwargs or {}))
    if isinstance(pruner, str):
        pruner = pruners_lib.make_pruner(pruner)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=storage, study_name=study_name, direction=direction,
                                sampler=sampler, pruner=pruner, load_if_exists=True)

    def started() -> int:
        states = (*FINISHED, TrialState.RUNNING)
        return len(study.get_trials(deepcopy=False, states=states))

    finished = len(study.get_trials(deepcopy=False, states=FINISHED))
    remaining = num_trials - finished
    if remaining > 0:
        bar = tqdm(total=num_trials, initial=finished, desc=study_name[-40:], disable=not progress,
                   leave=False)

        def on_trial_end(study_: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            bar.update(1)
            # Other workers' running trials count too: the budget is the study's, not ours.
            if started() >= num_trials:
                study_.stop()

        try:
            study.optimize(_trial_objective(objective, space), n_trials=remaining,
                           timeout=budget.timeout_s, catch=catch, callbacks=[on_trial_end])
        finally:
            bar.close()
    return read_result(study)


def coarse_to_fine(
    objective: Objective,
    space: SearchSpace,
    *,
    budget: Budget,
    storage=None,
    study_name: str,
    fine_sampler: str = "tpe",
    coarse_fraction: float = 0.5,
    factor: float = 0.25,
    seed: int = 0,
    pruner: str = "none",
    direction: str = "minimize",
    catch: tuple[type[Exception], ...] = (),
    progress: bool = True,
) -> StudyResult:
    """Random search on `space` with `coarse_fraction` of the trials, then `fine_sampler` ("tpe"
    or "grid", the grid as fine as the rest of the budget allows) on `narrow(space, best,
    factor)`. Two studies, `<study_name>/coarse` and `<study_name>/fine/<narrowed digest>`; the
    result holds both stages' trials (attrs["stage"]) and the best of either."""
    if fine_sampler not in ("tpe", "grid", "random", "cmaes"):
        raise ValueError(f"fine_sampler must be tpe, grid, random or cmaes, got {fine_sampler!r}")
    if not 0 < coarse_fraction < 1 or budget.num_trials < 2:
        raise ValueError(f"coarse-to-fine needs 0 < coarse_fraction < 1 and a budget of at least "
                         f"2 trials, got {coarse_fraction} and {budget.num_trials}")
    num_coarse = min(budget.num_trials - 1, max(1, round(budget.num_trials * coarse_fraction)))
    common = dict(storage=storage, pruner=pruner, direction=direction, seed=seed, catch=catch,
                  progress=progress)
    coarse = run_study(objective, space, sampler="random", study_name=f"{study_name}/coarse",
                       budget=dataclasses.replace(budget, num_trials=num_coarse), **common)
    if coarse.best_params is None:
        raise ValueError(f"coarse-to-fine: no coarse trial of {study_name!r} completed "
                         f"({coarse.num_failed} failed, {coarse.num_pruned} pruned)")
    fine_space = narrow(space, coarse.best_params, factor)
    num_fine = budget.num_trials - num_coarse
    grid_points = 1
    if fine_sampler == "grid":
        while fine_space.grid_size(grid_points + 1) <= num_fine and grid_points < num_fine:
            grid_points += 1
    fine = run_study(objective, fine_space, sampler=fine_sampler, grid_points=grid_points,
                     study_name=f"{study_name}/fine/{fine_space.digest()}",
                     budget=dataclasses.replace(budget, num_trials=num_fine), **common)
    tag = lambda records, stage: [r._replace(attrs={**r.attrs, "stage": stage})  # noqa: E731
                                  for r in records]
    trials = tag(coarse.trials, "coarse") + tag(fine.trials, "fine")
    sign = 1.0 if direction == "minimize" else -1.0
    best = min((coarse, fine), key=lambda r: sign * r.best_value)
    return StudyResult(study_name, best.best_params, best.best_value, trials,
                       coarse.num_complete + fine.num_complete,
                       coarse.num_pruned + fine.num_pruned, coarse.num_failed + fine.num_failed)


def search(objective: Objective, space: SearchSpace, *, sampler: str, **kwargs) -> StudyResult:
    """`run_study` for a sampler of `samplers.SAMPLERS`, `coarse_to_fine` for "coarse_to_fine"
    (kwargs `fine_sampler`, `coarse_fraction`, `factor` go to it)."""
    if sampler == "coarse_to_fine":
        for key in ("grid_points", "sampler_kwargs"):
            kwargs.pop(key, None)
        return coarse_to_fine(objective, space, **kwargs)
    if sampler not in samplers_lib.SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; valid samplers: {SEARCHES}")
    for key in ("fine_sampler", "coarse_fraction", "factor"):
        kwargs.pop(key, None)
    return run_study(objective, space, sampler=sampler, **kwargs)
