"""The body of `python -m experiments.hpo`: one search, its sensitivity, optionally the
budget comparison, and the workdir's results.json / report.md / PNGs.

    results = run_hpo(config, workdir)        # config: experiments/configs/hpo.py's keys

Resumable: the studies live in the workdir's Optuna storage (SQLite by default) under names
keyed by the space, sampler, seed and objective settings, and the comparison's final
evaluations are cached in `final_evals.json`, so running the same command again re-runs no
finished trial and re-trains nothing.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from experiments import tracking
from experiments.automl import compare, importance, objectives, report
from experiments.automl import pruners as pruners_lib
from experiments.automl import study as study_lib
from experiments.automl.space import SearchSpace, at_edge

OBJECTIVES = ("training", "meta")


def _plain(value):
    return value.to_dict() if hasattr(value, "to_dict") else dict(value or {})


def validate(config) -> SearchSpace:
    """Fail fast (before compiling anything) on unknown names; returns the search space."""
    if config.objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {config.objective!r}; valid: {OBJECTIVES}")
    if config.sampler not in study_lib.SEARCHES:
        raise ValueError(f"unknown sampler {config.sampler!r}; valid samplers: "
                         f"{study_lib.SEARCHES}")
    if config.pruner not in pruners_lib.PRUNERS:
        raise ValueError(f"unknown pruner {config.pruner!r}; valid pruners: "
                         f"{pruners_lib.PRUNERS}")
    if config.storage not in study_lib.STORAGES:
        raise ValueError(f"unknown storage {config.storage!r}; valid: {study_lib.STORAGES}")
    space = SearchSpace.from_dict(_plain(config.space))
    study_lib.Budget(int(config.num_trials))
    if config.sampler == "grid" and config.num_trials < space.grid_size(config.grid_points):
        raise ValueError(f"num_trials={config.num_trials} is below the grid's "
                         f"{space.grid_size(config.grid_points)} points (grid_points="
                         f"{config.grid_points}); raise num_trials or lower grid_points")
    return space


def build_objective(config, task=None):
    """(objective, settings that define it) for the config; `task` overrides config.task."""
    if config.objective == "meta":
        meta = config.meta
        settings = {"base": _plain(meta.base), "outer_steps": meta.outer_steps,
                    "eval_every": meta.eval_every, "num_eval_tasks": meta.num_eval_tasks}
        return objectives.MetaTrainingObjective(
            settings["base"], outer_steps=meta.outer_steps, eval_every=meta.eval_every,
            num_eval_tasks=meta.num_eval_tasks), settings
    if task is None:
        import models

        task = models.get_task(config.task, **_plain(config.task_kwargs))
    settings = {"task": config.task, "task_kwargs": _plain(config.task_kwargs),
                "optimizer": config.optimizer, "fixed": _plain(config.fixed),
                "num_steps": config.num_steps, "eval_every": config.eval_every,
                "eval_batches": config.eval_batches, "full_split_eval": config.full_split_eval,
                "seeds": list(config.seeds), "last_k": config.last_k, "rungs": list(config.rungs)}
    objective = objectives.TrainingObjective(
        task, config.optimizer, fixed=settings["fixed"], num_steps=config.num_steps,
        eval_every=config.eval_every, eval_batches=config.eval_batches,
        full_split_eval=config.full_split_eval, seeds=tuple(config.seeds),
        last_k=config.last_k, rungs=tuple(config.rungs))
    return objective, settings


def run_search(config, space, objective, settings, storage, *, seed: int, prefix: str = "",
               num_trials: int | None = None, sampler: str | None = None):
    """One search of the config's sampler / pruner / budget over `space` (resumed if stored)."""
    sampler = sampler or config.sampler
    name = prefix or (f"{settings.get('task', 'meta')}/{config.optimizer}"
                      if config.objective == "training" else "meta_training")
    key = study_lib.study_key(name, space, sampler=sampler, seed=seed,
                              pruner=config.pruner, objective=settings,
                              grid_points=config.grid_points, startup=config.startup_trials,
                              fine=[config.fine_sampler, config.coarse_fraction,
                                    config.narrow_factor])
    return study_lib.search(
        objective, space, sampler=sampler, storage=storage, study_name=key,
        budget=study_lib.Budget(int(num_trials or config.num_trials),
                                config.timeout_s or None),
        pruner=pruners_lib.make_pruner(config.pruner, startup_trials=config.prune_startup,
                                       reduction_factor=config.prune_reduction),
        seed=seed, grid_points=config.grid_points,
        sampler_kwargs={"startup_trials": config.startup_trials}
        if sampler in ("tpe", "cmaes") else None,
        fine_sampler=config.fine_sampler, coarse_fraction=config.coarse_fraction,
        factor=config.narrow_factor, progress=config.progress)


def _log_new_trials(tracker, workdir: Path, result) -> None:
    logged = set()
    if (workdir / "metrics.jsonl").exists():
        logged = {row["step"] for row in tracking.read_metrics(workdir)}
    values = result.values_in_order()
    best = compare.best_so_far([t.value if t.state == "COMPLETE" else math.nan
                                for t in result.trials if t.state != "RUNNING"])
    finished = [t for t in result.trials if t.state != "RUNNING"]
    for index, trial in enumerate(finished):
        if index not in logged:
            tracker.log_metrics(index, {"objective": values[index], "best_objective": best[index],
                                        "pruned": int(trial.state == "PRUNED"),
                                        "failed": int(trial.state == "FAIL")})


def run_comparison(config, workdir: Path, space, objective, settings, storage,
                   task) -> dict[str, Any]:
    """Adam's best-so-far over 1..max(budgets) trials (one search per search seed), the final
    valid / test scores of each pick, and each shipped learned optimizer at its default."""
    import learned_opt as lo

    cmp = config.compare
    budgets = sorted(int(b) for b in cmp.budgets)
    trials_by_seed = {}
    for search_seed in cmp.search_seeds:
        result = run_search(config, space, objective, settings, storage, seed=int(search_seed),
                            num_trials=budgets[-1], prefix=f"{config.task}/compare",
                            sampler=cmp.sampler)
        trials_by_seed[int(search_seed)] = result.trials
    evaluate = compare.FinalEvaluation(task, num_steps=config.num_steps,
                                       eval_every=config.eval_every, seeds=tuple(cmp.final_seeds),
                                       last_k=config.last_k, eval_batches=config.eval_batches,
                                       full_split_eval=config.full_split_eval)
    cache_path = workdir / "final_evals.json"
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    adam = compare.adam_rows(evaluate, trials_by_seed, budgets, cache)
    names = (sorted(c["name"] for c in lo.list_pretrained()) if cmp.learned_optimizers == "all"
             else list(filter(None, str(cmp.learned_optimizers).split(","))))
    lopts = []
    learned_budgets = sorted(int(b) for b in cmp.get("learned_trials", ()))
    for name in names:
        key = f"lopt:{name}"
        make_tx, takes_lr, default_lr = compare.learned_optimizer_tx(name, config.num_steps)
        if key not in cache:
            cache[key] = evaluate(make_tx, {})
        lopts.append({"name": name, "trials": 0, "takes_learning_rate": takes_lr, **cache[key]})
        if not (takes_lr and learned_budgets):
            continue
        lopts += _tuned_learned_rows(config, name, make_tx, default_lr, learned_budgets,
                                     evaluate, cache, storage, task)
    tracking.write_json_atomic(cache_path, cache)
    plot = compare.plot_budget_curve(
        adam, lopts, workdir / "budget_curve.png",
        f"{config.task}, {config.num_steps} steps; search {cmp.sampler} on valid "
        f"(seeds {list(config.seeds)}); final seeds {list(cmp.final_seeds)} on valid and test")
    return {"adam": adam, "learned_optimizers": lopts, "plot": plot.name,
            "learned_optimizers_tuned": any(r["takes_learning_rate"] for r in lopts)}


def _tuned_learned_rows(config, name, make_tx, default_lr, budgets, evaluate, cache, storage,
                        task) -> list[dict[str, Any]]:
    """A learned optimizer after N trials over its learning rate (Adam's sampler and search
    seeds, a range centred on its card's rate): one row per budget, mean over search seeds."""
    cmp = config.compare
    space = compare.learned_lr_space(float(default_lr), float(cmp.learned_lr_decades))
    objective = objectives.TrainingObjective(
        task, make_tx, num_steps=config.num_steps, eval_every=config.eval_every,
        eval_batches=config.eval_batches, full_split_eval=config.full_split_eval,
        seeds=tuple(config.seeds), last_k=config.last_k)
    settings = {"task": config.task, "learned_optimizer": name, "num_steps": config.num_steps,
                "seeds": list(config.seeds), "last_k": config.last_k}
    trials_by_seed = {int(seed): run_search(
        config, space, objective, settings, storage, seed=int(seed), num_trials=budgets[-1],
        prefix=f"{config.task}/compare/{name}", sampler=cmp.sampler).trials
        for seed in cmp.search_seeds}
    per_seed = compare.adam_rows(evaluate, trials_by_seed, budgets, cache, make_tx=make_tx,
                                 cache_prefix=f"lopt:{name}:")
    rows = []
    for budget in budgets:
        group = [r for r in per_seed if r["trials"] == budget]
        if group:
            rows.append({"name": name, "trials": budget, "takes_learning_rate": True,
                         "search_seeds": len(group),
                         "learning_rates": [r["params"]["learning_rate"] for r in group],
                         **{k: float(np.mean([r[k] for r in group]))
                            for k in ("search_valid", "valid", "test")}})
    return rows


def run_hpo(config, workdir: str | Path, *, task=None) -> dict[str, Any]:
    """Search, sensitivity, optional comparison, report; returns what results.json holds.
    `task` (tests) replaces `models.get_task(config.task, ...)`."""
    space = validate(config)
    workdir = Path(workdir)
    storage = study_lib.storage_for(workdir, config.storage)
    if config.objective == "training" and task is None:
        import models

        task = models.get_task(config.task, **_plain(config.task_kwargs))
    objective, settings = build_objective(config, task)
    tracker = tracking.start_run(workdir, config=config, backends=tuple(config.backends))
    start = time.time()
    result = run_search(config, space, objective, settings, storage, seed=config.sampler_seed)
    _log_new_trials(tracker, workdir, result)
    scores = importance.param_importances(result.trials, space)
    plots = [importance.plot_objective_vs_params(result.trials, space,
                                                 workdir / "objective_vs_params.png").name]
    if scores:
        plots.append(importance.plot_importances(scores, workdir / "importance.png").name)
    results: dict[str, Any] = {
        "study_name": result.study_name, "space": space.to_dict(), "sampler": config.sampler,
        "pruner": config.pruner, "objective": config.objective, "settings": settings,
        "best_params": result.best_params, "best_value": result.best_value,
        "at_edge": at_edge(space, result.best_params or {}),
        "num_complete": result.num_complete, "num_pruned": result.num_pruned,
        "num_failed": result.num_failed, "importance": scores,
        "trials": [t._asdict() for t in result.trials], "plots": plots,
        "search_wall_s_this_session": time.time() - start,
    }
    if config.objective == "training" and config.compare.enabled:
        results["comparison"] = run_comparison(config, workdir, space, objective, settings,
                                               storage, task)
        plots.append(results["comparison"]["plot"])
    tracking.write_json_atomic(workdir / "results.json", tracking.to_jsonable(results))
    (workdir / "report.md").write_text(report.hpo_report(results))
    for name in plots:
        tracker.log_artifact(workdir / name)
    tracker.finish()
    return results
