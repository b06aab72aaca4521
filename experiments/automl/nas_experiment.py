"""The body of `python -m experiments.nas`: per dataset, every search strategy at equal budget
over several seeds, then the best architecture found against the zoo's default.

    results = run_nas(config, workdir)       # config: experiments/configs/nas.py's keys

Resumable: every (dataset, strategy, seed) study lives in the workdir's Optuna storage, and the
final comparison rows are cached in `final_rows.json`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from experiments import tracking
from experiments.automl import nas_estimation, nas_final, nas_search, nas_space, report
from experiments.automl import study as study_lib


def validate(config):
    """(space, estimator) for the config, failing fast on unknown names."""
    nas_space._check(config.family)
    for dataset in _names(config.datasets):
        nas_space._check(config.family, dataset)
    strategies = _names(config.strategies)
    unknown = [s for s in strategies if s not in nas_search.STRATEGIES]
    if unknown or not strategies:
        raise ValueError(f"unknown strategies {unknown or strategies}; valid: "
                         f"{nas_search.STRATEGIES}")
    space = nas_space.search_space(config.family, **config.space.to_dict())
    estimator = nas_estimation.make_estimator(
        config.estimator, num_steps=config.search_steps, eval_every=config.search_eval_every,
        target_steps=config.final_steps, learning_rate=config.learning_rate,
        seeds=tuple(config.search_train_seeds))
    study_lib.Budget(int(config.num_trials))
    return space, estimator


def _names(value) -> list[str]:
    from experiments import cli

    return list(cli.names(value))


def run_dataset(config, workdir: Path, dataset: str, space, estimator, storage,
                cache: dict) -> dict[str, Any]:
    objective = nas_search.architecture_objective(config.family, dataset, estimator,
                                                  batch_size=config.batch_size)
    runs = nas_search.compare_strategies(
        objective, space, _names(config.strategies), seeds=tuple(config.search_seeds),
        num_trials=int(config.num_trials), storage=storage,
        prefix=f"{dataset}/{config.family}/{config.estimator}/"
               f"{study_lib.digest({'estimator': repr(estimator)})}",
        population_size=config.population_size, tournament_size=config.tournament_size,
        startup_trials=config.startup_trials, progress=config.progress)
    strategy, best = nas_search.best_overall(runs)
    found = nas_space.arch_from_params(config.family, best.best_params)
    plot = nas_search.plot_curves(runs, workdir / f"search_{dataset}.png",
                                  f"{config.family} on {dataset}: estimator {config.estimator}")
    final = []
    if config.family != "transformer":  # the accuracy comparison is for the classifiers
        for label, arch in ((f"found ({strategy})", found),
                            ("zoo default", nas_space.default_arch(config.family, dataset))):
            key = f"{dataset}:{config.final_steps}:{list(config.final_seeds)}:{arch!r}"
            if key not in cache:
                cache[key] = nas_final.final_row(
                    config.family, dataset, arch, label=label, num_steps=config.final_steps,
                    eval_every=config.final_eval_every, seeds=tuple(config.final_seeds),
                    learning_rate=config.learning_rate, batch_size=config.batch_size)
            final.append(dict(cache[key], label=label))
    return {"strategies": nas_search.summarize(runs), "best_strategy": strategy,
            "found_arch": found, "found_score": best.best_value, "plot": plot.name,
            "final": final}


def run_nas(config, workdir: str | Path) -> dict[str, Any]:
    space, estimator = validate(config)
    workdir = Path(workdir)
    storage = study_lib.storage_for(workdir, config.storage)
    tracker = tracking.start_run(workdir, config=config, backends=tuple(config.backends))
    cache_path = workdir / "final_rows.json"
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    start = time.time()
    per_dataset = {}
    for step, dataset in enumerate(_names(config.datasets)):
        per_dataset[dataset] = run_dataset(config, workdir, dataset, space, estimator, storage,
                                           cache)
        tracking.write_json_atomic(cache_path, cache)
        summary = per_dataset[dataset]["strategies"]
        tracker.log_metrics(step, {f"{dataset}/{s}/best": r["best_mean"]
                                   for s, r in summary.items()})
        tracker.log_artifact(workdir / per_dataset[dataset]["plot"])
    results = {"family": config.family, "datasets": _names(config.datasets),
               "estimator": config.estimator, "estimator_settings": repr(estimator),
               "strategies": _names(config.strategies),
               "num_trials": int(config.num_trials), "search_seeds": list(config.search_seeds),
               "space": space.to_dict(), "per_dataset": per_dataset,
               "wall_s_this_session": time.time() - start}
    tracking.write_json_atomic(workdir / "results.json", tracking.to_jsonable(results))
    (workdir / "report.md").write_text(report.nas_report(results))
    tracker.finish()
    return results
