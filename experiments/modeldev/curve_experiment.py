"""What `python -m experiments.learning_curves` runs: test loss vs data and vs step budget per
optimizer and model size, power-law fits, crossings, trade-offs and per-class PR curves.

Every point (optimizer, size, data fraction or budget) is its own tuned run: its learning rate is
tuned with `benchmarking.tuning` under `config.protocol` on the tuning seeds (the optimizer sees
only the point's training rows; valid is read for generalization), then the winner trains on the
final seeds and test is read from the final parameters. Each point is cached as
`points/<name>.json` in the workdir; a point whose file exists is not recomputed (resume).

Data subsets are the first `fraction * N` rows of one fixed random permutation of the train
split (nested: a larger fraction contains every smaller one), through `members.ResampledTask`
with a traced row count, so all fractions of one (optimizer, size) share one compiled program.

    results, report_md, figures = run_learning_curves(config, workdir)
"""

from __future__ import annotations

import itertools
import json
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import models
from experiments.benchmarking import tuning
from experiments.modeldev import curves, members, optimizers, report, tradeoffs
from learned_opt import training


def parse_size(text: str) -> tuple[int, ...]:
    """'64' -> (64,), '64x64' -> (64, 64)."""
    try:
        size = tuple(int(v) for v in str(text).split("x"))
    except ValueError:
        raise ValueError(f"bad model size {text!r}; expected widths like '64' or '64x64'") \
            from None
    if not size or min(size) < 1:
        raise ValueError(f"bad model size {text!r}; widths must be positive")
    return size


def _point_path(workdir: Path, name: str) -> Path:
    return workdir / "points" / f"{name.replace('/', '__')}.json"


class _Runner:
    """Compiled runs of one (optimizer, size, num_steps); the row count is an argument."""

    def __init__(self, task, tunable, spec, permutation):
        def run(hparams, keys, num_used):
            subset = members.ResampledTask(task, permutation, num_used=num_used)
            inner = training.make_run_fn(subset, tunable.make_tx, num_steps=spec.num_steps,
                                         eval_every=spec.eval_every,
                                         eval_splits=spec.eval_splits,
                                         full_split_eval=True, keep_snapshots=True)
            return inner(hparams, keys)

        self.run = jax.jit(run)
        self.task = task
        self.tunable = tunable
        self.spec = spec

    def run_fn(self, num_used: int):
        return lambda hparams, keys: self.run(hparams, keys, jnp.int32(num_used))


def _final_metrics(task, snapshots) -> dict:
    """Per-seed metrics of the final parameters on the full train / valid / test splits."""
    final = jax.tree.map(lambda leaf: leaf[:, -1], snapshots)
    out = {}
    for split in ("train", "valid", "test"):
        batch = task.full_split(split)
        metrics = jax.vmap(lambda p, b=batch: task.metrics(p, b))(final)
        for name, value in metrics.items():
            out[f"{split}_{name}"] = np.asarray(value, np.float64).tolist()
    return out


def _compute_point(runner: _Runner, num_used: int, config, workdir: Path, study: str,
                   with_pr: bool) -> dict:
    start = time.time()
    best = _tune(runner, num_used, workdir, study)
    hparams = {"learning_rate": jnp.float32(best["learning_rate"])}
    curves_ = runner.run_fn(num_used)(hparams, training.seed_keys(config.seeds))
    train_loss = np.asarray(curves_.train_loss, np.float64)
    point = {"num_used": int(num_used), "num_steps": runner.spec.num_steps,
             "tuning": best, "learning_rate": best["learning_rate"],
             "final_smoothed_train_loss": [
                 float(np.mean(seed[-runner.spec.smoothing_window:])) for seed in train_loss],
             "diverged": [bool(not np.all(np.isfinite(seed))) for seed in train_loss],
             **_final_metrics(runner.task, curves_.snapshots)}
    if with_pr:
        params = jax.tree.map(lambda leaf: leaf[0, -1], curves_.snapshots)
        outputs = members.member_outputs(runner.task, jax.tree.map(lambda x: x[None], params),
                                         "test")[0]
        labels = np.asarray(runner.task.full_split("test")["y"])
        point["pr"] = tradeoffs.precision_recall_per_class(labels, outputs)
    point["wall_s"] = time.time() - start
    return point


def _tune(runner: _Runner, num_used: int, workdir: Path, study: str) -> dict:
    storage = f"sqlite:///{workdir.resolve() / 'optuna.db'}"
    result = tuning.tune(runner.task, runner.tunable, runner.spec, storage=storage,
                         study_name=study, run_fn=runner.run_fn(num_used))
    (protocol,) = runner.spec.protocols
    return {"learning_rate": float(result.best[protocol]["learning_rate"]),
            "objective": result.best_value[protocol], "at_edge": result.at_edge[protocol],
            "num_trials": len(result.trials), "protocol": protocol,
            "objective_name": tuning.OBJECTIVES[protocol]}


def _cached_point(workdir: Path, name: str, compute) -> dict:
    path = _point_path(workdir, name)
    if path.is_file():
        return json.loads(path.read_text())
    point = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(point, indent=1, allow_nan=True))
    return point


def _curve(points: list[dict], x: list[float], metric: str = "test_loss") -> dict:
    values = np.asarray([p[metric] for p in points], np.float64).T     # (S, X)
    accuracy = np.asarray([p.get("test_accuracy", [math.nan]) for p in points], np.float64).T
    return {"x": x, "test_loss_SX": values.tolist(),
            "test_loss_mean": np.nanmean(values, axis=0).tolist(),
            "test_loss_std": np.nanstd(values, axis=0).tolist(),
            "test_accuracy_mean": np.nanmean(accuracy, axis=0).tolist(),
            "train_loss_mean": [float(np.mean(p["final_smoothed_train_loss"])) for p in points],
            "learning_rates": [p["learning_rate"] for p in points]}


def _fit(curve: dict, extrapolate_to: float, seed: int) -> None:
    x = np.asarray(curve["x"], np.float64)
    y = np.asarray(curve["test_loss_mean"], np.float64)
    sem = np.asarray(curve["test_loss_std"]) / math.sqrt(max(len(curve["test_loss_SX"]), 1))
    try:
        fit = curves.fit_power_law(x, y, sigma=sem)
    except (RuntimeError, ValueError) as error:
        curve["fit"] = {"error": str(error)}
        return
    curve["fit"] = fit.to_dict()
    curve["extrapolation"] = curves.extrapolate(fit, [extrapolate_to], seed=seed)
    grid = np.geomspace(x.min(), extrapolate_to, 50)
    curve["fit_curve"] = {"x": grid.tolist(), "y": fit.predict(grid).tolist()}


def run_learning_curves(config, workdir) -> tuple[dict, str, list[Path]]:
    """All points of the config (cached), the fits, crossings and trade-offs."""
    workdir = Path(workdir)
    names = optimizers.parse_optimizers(config.optimizers)
    sizes = [str(s) for s in config.sizes]
    base = {k: v for k, v in dict(config.task_kwargs).items()}
    tasks = {s: models.get_task(config.task, **{**base, config.size_key: parse_size(s)})
             for s in sizes}
    num_train = members.num_train(tasks[sizes[0]])
    permutation = jax.random.permutation(jax.random.key(config.subset_seed), num_train)
    row_counts = curves.subset_sizes(num_train, config.fractions)
    results = {"task": config.task, "protocol": config.protocol, "seeds": list(config.seeds),
               "tuning_seeds": list(config.tuning_seeds), "fractions": list(config.fractions),
               "num_train": num_train, "row_counts": row_counts,
               "budgets": list(config.budgets), "num_steps": config.num_steps,
               "data_curves": {}, "budget_curves": {}, "crossings": [], "pr_curves": {}}

    def spec_for(num_steps):
        return optimizers.tuning_spec(config.protocol, num_steps=num_steps,
                                      seeds=config.tuning_seeds,
                                      grid_points=config.tuning_grid_points)

    for name, size in itertools.product(names, sizes):
        key = f"{name}/{size}"
        tunable = optimizers.build_tunable(name, num_steps=config.num_steps,
                                           lr_decades=config.lr_decades)
        runner = _Runner(tasks[size], tunable, spec_for(config.num_steps), permutation)
        points = []
        for fraction, rows in zip(config.fractions, row_counts, strict=True):
            point_name = f"data/{key}/{fraction:g}"
            compute = (lambda r=rows, n=point_name, f=fraction: _compute_point(
                runner, r, config, workdir, f"curves/{n}", with_pr=f == 1))
            points.append(_cached_point(workdir, point_name, compute))
            if fraction == 1 and "pr" in points[-1]:
                pr = points[-1]["pr"]
                aps = [c["average_precision"] for c in pr.values()
                       if c["average_precision"] is not None]
                results["pr_curves"][key] = {"curves": pr,
                                             "mean_average_precision": float(np.mean(aps)),
                                             "min_average_precision": float(np.min(aps))}
        curve = _curve(points, [float(r) for r in row_counts])
        _fit(curve, 2.0 * num_train, config.seed)
        results["data_curves"][key] = curve
        if size in [str(s) for s in config.budget_sizes]:
            budget_points = []
            for budget in config.budgets:
                b_tunable = optimizers.build_tunable(name, num_steps=budget,
                                                     lr_decades=config.lr_decades)
                point_name = f"budget/{key}/{budget}"

                def compute(b=budget, t=b_tunable, n=point_name):
                    b_runner = _Runner(tasks[size], t, spec_for(b), permutation)
                    return _compute_point(b_runner, num_train, config, workdir,
                                          f"curves/{n}", with_pr=False)

                budget_points.append(_cached_point(workdir, point_name, compute))
            results["budget_curves"][key] = _curve(budget_points,
                                                   [float(b) for b in config.budgets])
    results["crossings"] = _crossings(results, names, sizes, config)
    results["tradeoffs"] = _tradeoffs(config, workdir)
    figures = [report.curve_figure(results, "data", workdir / "curves_data.png")]
    if results["budget_curves"]:
        figures.append(report.curve_figure(results, "budget", workdir / "curves_budget.png"))
    figures += _tradeoff_figures(results, workdir)
    for key, pr in results["pr_curves"].items():
        path = workdir / f"pr_{key.replace('/', '_')}.png"
        tradeoffs.plot_pr_curves(pr["curves"], path, title=f"{config.task} {key}: test PR per "
                                 f"class, full data, seed {config.seeds[0]}, protocol "
                                 f"{config.protocol}")
        figures.append(path)
    return results, report.curves_markdown(results), figures


def _crossings(results, names, sizes, config) -> list[dict]:
    pairs = []
    for size in sizes:   # optimizers against each other at one size
        pairs += [("data", f"{a}/{size}", f"{b}/{size}")
                  for a, b in itertools.combinations(names, 2)]
    for name in names:   # sizes against each other with one optimizer
        pairs += [("data", f"{name}/{a}", f"{name}/{b}")
                  for a, b in itertools.combinations(sizes, 2)]
    budget_keys = list(results["budget_curves"])
    pairs += [("budget", a, b) for a, b in itertools.combinations(budget_keys, 2)]
    out = []
    for kind, a, b in pairs:
        table = results["data_curves" if kind == "data" else "budget_curves"]
        found = curves.crossing_interval(table[a]["x"], table[a]["test_loss_SX"],
                                         table[b]["test_loss_SX"],
                                         num_resamples=config.num_resamples, seed=config.seed)
        out.append({"curve": f"test loss vs {kind}", "a": a, "b": b, **found})
    return out


def _tradeoffs(config, workdir) -> dict | None:
    if not config.benchmark_results:
        return None
    source = Path(config.benchmark_results)
    bench = json.loads(source.read_text())
    points = tradeoffs.benchmark_points(bench, config.protocol)
    for point in points:
        point["pareto"] = []
    for cost in tradeoffs.COSTS:
        mask = tradeoffs.pareto_front([p["cost"][cost] for p in points],
                                      [p["quality"] for p in points])
        for point, on in zip(points, mask, strict=True):
            if on:
                point["pareto"].append(cost)
    return {"source": str(source), "protocol": config.protocol, "points": points,
            "quality_name": points[0]["quality_name"] if points else None}


def _tradeoff_figures(results, workdir) -> list[Path]:
    trade = results["tradeoffs"]
    if not trade or not trade["points"]:
        return []
    paths = []
    for cost in tradeoffs.COSTS:
        path = workdir / f"pareto_{cost}.png"
        tradeoffs.plot_pareto(trade["points"], cost, path,
                              title=f"{trade['quality_name']} vs {cost}, protocol "
                                    f"{trade['protocol']} ({trade['source']})")
        paths.append(path)
    return paths
