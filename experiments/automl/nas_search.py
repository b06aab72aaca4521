"""Search strategies over an architecture space, compared at equal budget over several seeds.

    objective = architecture_objective("mlp", "digits", estimator)    # params, report -> score
    runs = compare_strategies(objective, space, ("random", "evolution", "tpe"), seeds=(0, 1, 2),
                              num_trials=32, storage=storage_for(workdir), prefix="digits/mlp")
    runs["evolution"][0].best_params

Strategies are samplers of `experiments.automl.samplers`: "random" (RandomSampler),
"evolution" (regularised / aging evolution) and "tpe". Every strategy gets the same number of
trials with the same estimator, so the same compute up to the architectures' own costs (which
are recorded: `cost_steps` and `wall_s` per trial).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from experiments.automl import nas_space
from experiments.automl import study as study_lib
from experiments.automl.compare import best_so_far
from experiments.automl.space import SearchSpace

STRATEGIES = ("random", "evolution", "tpe")


def architecture_objective(family: str, dataset: str, estimator: Callable, *,
                           batch_size: int = 64) -> Callable:
    """`objective(params, report)`: build the trial's architecture and score it with
    `estimator(task, report)`; records the architecture and its parameter count.

    The estimator is deterministic, so an architecture met again in this process (evolution
    revisits them) reuses its outcome instead of retraining: such a trial has `cached=True`
    and `cost_steps=0` (no new compute was spent)."""
    from learned_opt import training as train_loop

    seen: dict[str, tuple[dict, dict[int, float]]] = {}

    def objective(params, report):
        arch = nas_space.arch_from_params(family, params)
        key = repr(arch)
        if key in seen:
            outcome, reported = seen[key]
            for step, value in reported.items():
                report(step, value)
            return dict(outcome, cached=True, cost_steps=0)
        task = nas_space.build_task(family, dataset, arch, batch_size=batch_size)
        reported = {}

        def record(step, value):
            reported[step] = value
            report(step, value)

        outcome = dict(estimator(task, record))
        outcome["num_params"] = train_loop.num_parameters(task)
        outcome["arch"] = key
        seen[key] = (outcome, reported)
        return dict(outcome, cached=False)

    return objective


def compare_strategies(objective: Callable, space: SearchSpace, strategies: Sequence[str], *,
                       seeds: Sequence[int], num_trials: int, storage, prefix: str,
                       population_size: int = 8, tournament_size: int = 3,
                       startup_trials: int = 8, pruner: str = "none",
                       progress: bool = True) -> dict[str, list[study_lib.StudyResult]]:
    """One study per (strategy, seed), each of `num_trials` trials (resumed when stored)."""
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown or not strategies:
        raise ValueError(f"unknown strategies {unknown or list(strategies)}; valid: {STRATEGIES}")
    options = {"evolution": {"population_size": population_size,
                             "tournament_size": tournament_size},
               "tpe": {"startup_trials": startup_trials}, "random": {}}
    runs: dict[str, list[study_lib.StudyResult]] = {}
    for strategy in strategies:
        runs[strategy] = [
            study_lib.run_study(
                objective, space, sampler=strategy, budget=study_lib.Budget(num_trials),
                storage=storage, pruner=pruner, seed=int(seed), progress=progress,
                sampler_kwargs=options[strategy],
                study_name=study_lib.study_key(f"{prefix}/{strategy}", space, seed=int(seed),
                                               options=options[strategy], pruner=pruner))
            for seed in seeds]
    return runs


def curves(results: Sequence[study_lib.StudyResult]) -> np.ndarray:
    """(seeds, trials) best-so-far scores (failed / pruned trials do not improve it)."""
    rows = [best_so_far([t.value if t.state == "COMPLETE" else math.nan
                         for t in r.trials if t.state != "RUNNING"]) for r in results]
    length = min(len(row) for row in rows)
    return np.asarray([row[:length] for row in rows], dtype=np.float64)


def summarize(runs: Mapping[str, Sequence[study_lib.StudyResult]]) -> dict[str, dict]:
    """Per strategy: best score (mean / min / max over seeds) and the compute it spent."""
    out = {}
    for strategy, results in runs.items():
        best = np.asarray([r.best_value for r in results], dtype=np.float64)
        trials = [t for r in results for t in r.trials]
        out[strategy] = {
            "best_mean": float(best.mean()), "best_min": float(best.min()),
            "best_max": float(best.max()), "per_seed": best.tolist(),
            "cost_steps": int(sum(t.attrs.get("cost_steps", 0) for t in trials)),
            "wall_s": float(sum(t.attrs.get("wall_s", 0.0) for t in trials)),
            "num_failed": sum(r.num_failed for r in results),
        }
    return out


def best_overall(runs: Mapping[str, Sequence[study_lib.StudyResult]]):
    """(strategy, result) holding the best score of every run."""
    pairs = [(s, r) for s, results in runs.items() for r in results if r.best_params]
    if not pairs:
        raise ValueError("no architecture trial completed")
    return min(pairs, key=lambda pair: pair[1].best_value)


def plot_curves(runs: Mapping[str, Sequence[study_lib.StudyResult]], path: str | Path,
                title: str) -> Path:
    """Best-so-far estimator score against trials: mean over seeds, min-max band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for index, (strategy, results) in enumerate(runs.items()):
        values = curves(results)
        x = np.arange(1, values.shape[1] + 1)
        values = np.where(np.isfinite(values), values, np.nan)
        ax.plot(x, np.nanmean(values, axis=0), color=f"C{index}",
                label=f"{strategy} ({len(results)} seeds)")
        ax.fill_between(x, np.nanmin(values, axis=0), np.nanmax(values, axis=0),
                        color=f"C{index}", alpha=0.15)
    ax.set_xlabel("trials (equal budget per strategy)")
    ax.set_ylabel("best estimated valid loss so far")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
