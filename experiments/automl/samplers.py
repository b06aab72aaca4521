"""Samplers by name: Optuna's grid, random, TPE and CMA-ES, plus regularised evolution.

    sampler = make_sampler("tpe", space, seed=0)            # an optuna.samplers.BaseSampler
    sampler = make_sampler("grid", space, grid_points=6)
    SAMPLERS   # ("grid", "random", "tpe", "cmaes", "evolution")

Coarse-to-fine (random, then TPE or grid on a narrowed space) is a two-stage *search*, not one
sampler: see `experiments.automl.study.coarse_to_fine`.

`RegularizedEvolutionSampler` is aging evolution (Real et al. 2019, "Regularized evolution for
image classifier architecture search"): the population is the last `population_size` finished
trials, a parent is the best of `tournament_size` of them drawn at random, and the child is the
parent with one parameter changed. It keeps no state of its own: everything is read back from
the study's trials, so it resumes from any storage and shares a study between workers.
"""

from __future__ import annotations

import importlib.util
import math
import random
from collections.abc import Mapping
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState

from experiments.automl.space import SearchSpace

SAMPLERS = ("grid", "random", "tpe", "cmaes", "evolution")


class RegularizedEvolutionSampler(optuna.samplers.BaseSampler):
    """Aging evolution over any Optuna search space (see the module docstring).

    Args:
      population_size: trials in the population (the most recent finished ones).
      tournament_size: population members drawn to pick each parent (the best one wins).
      seed: fixes the initial random population, the tournaments and the mutations.
    """

    def __init__(self, population_size: int = 16, tournament_size: int = 4, seed: int = 0):
        if not 1 <= tournament_size <= population_size:
            raise ValueError(f"need 1 <= tournament_size <= population_size, got "
                             f"{tournament_size}, {population_size}")
        self.population_size = population_size
        self.tournament_size = tournament_size
        self.seed = seed
        self._random = optuna.samplers.RandomSampler(seed=seed)
        self._children: dict[int, dict[str, Any]] = {}

    def reseed_rng(self) -> None:
        self._random.reseed_rng()

    def infer_relative_search_space(self, study, trial):
        return {}

    def sample_relative(self, study, trial, search_space):
        return {}

    def _rng(self, trial_number: int) -> random.Random:
        return random.Random(self.seed * 1_000_003 + trial_number)

    def _child(self, study, trial) -> dict[str, Any]:
        if trial.number in self._children:
            return self._children[trial.number]
        finished = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                    if t.number < trial.number]
        child: dict[str, Any] = {}
        if len(finished) >= self.population_size:
            rng = self._rng(trial.number)
            population = sorted(finished, key=lambda t: t.number)[-self.population_size:]
            contenders = rng.sample(population, self.tournament_size)
            sign = 1 if study.direction == optuna.study.StudyDirection.MINIMIZE else -1
            parent = min(contenders, key=lambda t: sign * t.value)
            child = {"params": dict(parent.params), "distributions": dict(parent.distributions),
                     "mutate": rng.choice(sorted(parent.params)), "rng": rng}
        self._children[trial.number] = child
        return child

    def sample_independent(self, study, trial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        child = self._child(study, trial)
        params = child.get("params", {})
        same = child.get("distributions", {}).get(param_name) == param_distribution
        if param_name in params and same:
            if param_name != child["mutate"]:
                return params[param_name]
            return mutate_value(param_distribution, params[param_name], child["rng"])
        # A parameter the parent did not have (a condition changed), or the initial population.
        return self._random.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values) -> None:
        self._children.pop(trial.number, None)


def mutate_value(distribution: BaseDistribution, value: Any, rng: random.Random) -> Any:
    """A different value near `value` (numeric: a step of up to 1/4 of the range on the search
    scale) or another category; `value` itself when the distribution has only one value."""
    if isinstance(distribution, CategoricalDistribution):
        others = [c for c in distribution.choices if c != value]
        return rng.choice(others) if others else value
    low, high = distribution.low, distribution.high
    if low == high:
        return value
    if isinstance(distribution, IntDistribution) and not distribution.log:
        step = distribution.step
        num_values = (high - low) // step + 1
        reach = max(1, num_values // 4)
        offsets = [k for k in range(-reach, reach + 1)
                   if k and low <= value + k * step <= high]
        return value + rng.choice(offsets) * step if offsets else value
    log = distribution.log
    lo, hi, x = (math.log(low), math.log(high), math.log(value)) if log else (low, high, value)
    for _ in range(16):
        proposal = x + rng.uniform(-0.25, 0.25) * (hi - lo)
        if lo <= proposal <= hi and proposal != x:
            break
    else:
        proposal = rng.uniform(lo, hi)
    proposal = math.exp(proposal) if log else proposal
    proposal = min(max(proposal, low), high)
    if isinstance(distribution, IntDistribution):
        return int(round(proposal))
    if isinstance(distribution, FloatDistribution) and distribution.step is not None:
        proposal = low + round((proposal - low) / distribution.step) * distribution.step
    return proposal


def make_sampler(
    name: str,
    space: SearchSpace,
    *,
    seed: int = 0,
    grid_points: int = 5,
    startup_trials: int = 10,
    population_size: int = 16,
    tournament_size: int = 4,
    options: Mapping[str, Any] | None = None,
) -> optuna.samplers.BaseSampler:
    """The Optuna sampler called `name` for `space`.

    Args:
      name: one of SAMPLERS.
      space: the search space (the grid sampler walks `space.grid(grid_points)`).
      seed: sampler seed: the same space, seed and objective give the same trials.
      grid_points: values per float of the grid.
      startup_trials: random trials before TPE / CMA-ES model the objective.
      population_size, tournament_size: of regularised evolution.
      options: extra keyword arguments for the Optuna sampler's constructor.

    Raises:
      ValueError: unknown name (lists SAMPLERS), a grid over a conditional space.
      ImportError: "cmaes" without the `cmaes` package (Optuna's CMA-ES needs it).
    """
    options = dict(options or {})
    if name == "grid":
        return optuna.samplers.GridSampler(space.grid(grid_points), seed=seed, **options)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed, **options)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup_trials, **options)
    if name == "cmaes":
        if importlib.util.find_spec("cmaes") is None:
            raise ImportError("sampler 'cmaes' is Optuna's CmaEsSampler, which needs the `cmaes` "
                              "package: pip install cmaes")
        return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=startup_trials,
                                            warn_independent_sampling=False, **options)
    if name == "evolution":
        return RegularizedEvolutionSampler(population_size, tournament_size, seed=seed, **options)
    raise ValueError(f"unknown sampler {name!r}; valid samplers: {SAMPLERS} "
                     f"(coarse-to-fine: experiments.automl.study.coarse_to_fine)")
