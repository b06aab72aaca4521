"""The benchmark's body: tune the baselines per task, run every optimizer on the final seeds.

    results = run_benchmark(config, workdir, tracker)     # the results.json content
    benchmarking.results.write_results(results, workdir, tracker)

`experiments.benchmark` is the command over this; `benchmarking.results` documents the schema.
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from experiments.benchmarking import metrics as bm
from experiments.benchmarking import suite as benchmark_suite
from experiments.benchmarking import tuning
from experiments.benchmarking.results import FINAL_SPLITS, SCHEMA_VERSION
from learned_opt import training


def tuning_spec(config) -> tuning.TuningSpec:
    """The TuningSpec of `config.tuning`, with the benchmark's step budget (same for all)."""
    t = config.tuning
    return tuning.TuningSpec(
        num_steps=int(config.num_steps), eval_every=int(config.eval_every),
        eval_batches=int(config.eval_batches),
        full_split_eval=bool(config.full_split_eval), last_k=int(t.last_k), seeds=tuple(t.seeds),
        sampler=str(t.sampler), grid_points=int(t.grid_points),
        weight_decay_points=int(t.weight_decay_points), num_trials=int(t.num_trials),
        sampler_seed=int(t.sampler_seed))


def compile_run(task, make_tx, tx_args, num_seeds, config):
    """One run function per (task, optimizer), compiled ahead of time for `num_seeds` seeds and
    shared by tuning and the final runs. Evaluates only "valid" in the loop and keeps parameter
    snapshots for `make_eval_fn`. Returns (compiled run, compile seconds)."""
    run = training.make_run_fn(
        task, make_tx, num_steps=int(config.num_steps), eval_every=int(config.eval_every),
        eval_splits=("valid",), eval_batches=int(config.eval_batches),
        full_split_eval=bool(config.full_split_eval), keep_snapshots=True)
    keys = training.seed_keys(tuple(range(num_seeds)))
    start = time.perf_counter()
    compiled = run.lower(tx_args, keys).compile()
    return compiled, time.perf_counter() - start


def final_run(compiled_run, eval_fn, tx_args, config):
    """Train on the final seeds, then evaluate the snapshots on train/valid/test.

    Returns host Curves whose `evals` hold all three splits (no snapshots) and the run's seconds.
    """
    keys = training.seed_keys(tuple(config.seeds))
    start = time.perf_counter()
    curves = jax.block_until_ready(compiled_run(tx_args, keys))
    run_s = time.perf_counter() - start
    evals = eval_fn(curves.snapshots, keys)
    curves = jax.device_get(curves._replace(evals=evals, snapshots=None))
    return curves, run_s


def summarize_run(curves, config, adam_train_loss=None) -> dict:
    """Final numbers, speedup against Adam's curve (if given) and downsampled curves of one run."""
    window, stride = int(config.smoothing_window), int(config.curve_stride)
    train_loss = np.asarray(curves.train_loss, dtype=np.float64)
    per_seed, final = {}, {}
    for split in FINAL_SPLITS:
        for metric, values in curves.evals[split].items():
            if split != "test" and metric != "loss":
                continue
            key = f"{split}_{metric}"
            last = np.asarray(values, dtype=np.float64)[:, -1]
            per_seed[key] = [bm.finite_or_none(v) for v in last]
            final[key] = bm.summarize(last)
    speedup = None
    if adam_train_loss is not None:
        mean_result = bm.speedup_of(adam_train_loss.mean(0), train_loss.mean(0), window)
        seed_results = [bm.speedup_of(a, b, window)
                        for a, b in zip(adam_train_loss, train_loss, strict=True)]
        speedup = mean_result._asdict() | {"per_seed": [r.speedup for r in seed_results]}
        speedup["target"] = bm.finite_or_none(speedup["target"])
    smoothed = np.stack([bm.smooth(seed_curve, window) for seed_curve in train_loss])
    return {
        "final": final, "per_seed": per_seed, "speedup": speedup,
        "diverged": [bm.diverged(seed_curve, window) for seed_curve in train_loss],
        "curves": {
            "eval_steps": [int(s) for s in curves.eval_steps],
            **{split: {m: _json_curve(v) for m, v in curves.evals[split].items()}
               for split in FINAL_SPLITS},
            "train_loss_steps": list(range(0, train_loss.shape[1], stride)),
            "train_loss_smoothed": _json_curve(smoothed[:, ::stride]),
        },
    }


def _json_curve(values) -> list:
    return [[bm.finite_or_none(v) for v in row] for row in np.asarray(values)]


def benchmark_task(suite_task, baselines, learned, config, workdir, tracker, progress) -> dict:
    """Tune the baselines on one task, run everything on the final seeds, return its record."""
    task = suite_task.task
    info = task.dataset_info() if hasattr(task, "dataset_info") else None
    num_params = training.num_parameters(task)
    record = {
        "label": suite_task.label, "origin": suite_task.origin, "family": suite_task.family,
        "num_params": num_params, "dataset": info,
        "random_guess_accuracy": (info or {}).get("random_guess_accuracy"),
        "zero_rule_accuracy": (info or {}).get("zero_rule_accuracy"),
        "distribution_kind": {s.label: benchmark_suite.distribution_kind(suite_task, s)
                              for s in learned},
        "distribution": {s.label: benchmark_suite.distribution_label(suite_task, s)
                         for s in learned},
        "optimizers": {},
    }
    spec = tuning_spec(config)
    storage = f"sqlite:///{Path(workdir).resolve() / 'optuna.db'}"
    study_name = f"{suite_task.label}:{(info or {}).get('fingerprint', '')}"
    num_seeds = len(config.seeds)
    eval_fn = training.make_eval_fn(task, FINAL_SPLITS, eval_batches=int(config.eval_batches),
                                      full_split_eval=bool(config.full_split_eval))
    runs = [(name, "baseline", tuning.get_baseline(name).make_tx) for name in baselines]
    runs += [(s.label, "learned", s.make_tx) for s in learned]
    # Adam first among the final runs: every other optimizer's speedup refers to its curve.
    runs.sort(key=lambda r: r[0] != "adam")
    learned_by_label = {s.label: s for s in learned}
    adam_train_loss, summaries, tuning_s = None, [], 0.0
    for label, kind, make_tx in runs:
        if kind == "baseline":
            names = tuning.get_baseline(label).ranges
            example_args = {name: jnp.float32(0.0) for name in names}
        else:
            example_args = learned_by_label[label].tx_args
        compiled, compile_s = compile_run(task, make_tx, example_args, num_seeds, config)
        if kind == "baseline":
            start = time.perf_counter()
            # The compiled run is shared only if tuning uses as many seeds as the final runs.
            shared = compiled if len(spec.seeds) == num_seeds else None
            result = tuning.tune_baseline(task, label, spec, storage=storage,
                                          study_name=study_name, run_fn=shared)
            tuning_s += time.perf_counter() - start
            progress.update(1)
            tx_args = {k: jnp.float32(v) for k, v in result.best_hparams.items()}
            tracker.log_params({f"tuned/{suite_task.label}/{label}": result.best_hparams})
            extra = {"description": f"{label}, tuned on valid", "hparams": result.best_hparams,
                     "tuning": {"best_value": bm.finite_or_none(result.best_value),
                                "num_trials": len(result.trials), "at_edge": result.at_edge,
                                "study": result.study_name,
                                "trials": [[h, bm.finite_or_none(v)] for h, v in result.trials]}}
        else:
            spec_ = learned_by_label[label]
            tx_args = spec_.tx_args
            extra = {"description": spec_.description, "config": dict(spec_.config),
                     "tuning": None}
        curves, run_s = final_run(compiled, eval_fn, tx_args, config)
        if label == "adam":
            adam_train_loss = np.asarray(curves.train_loss, dtype=np.float64)
        state_bytes = training.optimizer_state_bytes(task, make_tx(tx_args))
        record["optimizers"][label] = {
            "kind": kind, **extra, **summarize_run(curves, config, adam_train_loss),
            "time_per_step_s": run_s / int(config.num_steps), "compile_s": compile_s,
            "state_bytes": state_bytes, "state_bytes_per_param": state_bytes / num_params}
        summaries.append((label, curves))
        progress.update(1)
    for label, curves in summaries:
        for index, step in enumerate(np.asarray(curves.eval_steps)):
            tracker.log_metrics(int(step), {
                f"{suite_task.label}/{label}/{split}_loss": float(np.mean(
                    np.asarray(curves.evals[split]["loss"])[:, index]))
                for split in FINAL_SPLITS})
    record["tuning_wall_s"] = tuning_s
    record["compile_wall_s"] = sum(e["compile_s"] for e in record["optimizers"].values())
    return record


def headline_summary(task_records, learned_labels) -> dict:
    """Per learned optimizer, grouped by where each task lies relative to ITS meta-training
    distribution (`benchmark_suite.distribution_kind`): how many tasks it won (speedup >= 2),
    reached Adam's target on, ended within 10% of Adam's final train loss (and test loss) on,
    or diverged on (any seed); plus the median speedup (never-reached counts as 0)."""
    summary = {}
    for label in learned_labels:
        by_kind = {}
        for record in task_records:
            entry = record["optimizers"].get(label)
            adam = record["optimizers"].get("adam")
            if entry is None:
                continue
            counts = by_kind.setdefault(record["distribution_kind"][label], {
                "num_tasks": 0, "speedup_ge_2": 0, "reached_adam_target": 0,
                "within_10pct_of_adam": 0, "test_within_10pct_of_adam": 0, "diverged": 0,
                "speedups": []})
            counts["num_tasks"] += 1
            speedup = (entry["speedup"] or {}).get("speedup")
            counts["speedups"].append(speedup)
            counts["speedup_ge_2"] += int(speedup is not None and speedup >= 2.0)
            counts["reached_adam_target"] += int(speedup is not None)
            counts["diverged"] += int(any(entry["diverged"]))
            if adam is not None:
                counts["within_10pct_of_adam"] += _within_10pct(entry, adam, "train_loss")
                counts["test_within_10pct_of_adam"] += _within_10pct(entry, adam, "test_loss")
        for counts in by_kind.values():
            counts["median_speedup"] = float(np.median([s or 0.0 for s in counts["speedups"]]))
        summary[label] = by_kind
    return summary


def _within_10pct(entry, adam, metric: str) -> int:
    """1 if `entry`'s mean final `metric` is at most 10% above tuned Adam's (lower is better)."""
    ours = entry["final"][metric]["mean"]
    theirs = adam["final"][metric]["mean"]
    return int(ours is not None and theirs is not None and ours <= theirs + 0.1 * abs(theirs))


def reuse_tuning(source: str, workdir) -> str | None:
    """Start `workdir`'s Optuna storage from a copy of another benchmark's (`source`: that
    workdir or its optuna.db), so tuned baselines are not tuned again; returns the resolved
    source, or None when nothing is reused. Studies are named by task fingerprint, baseline and
    TuningSpec digest, so only identical tuning setups are reused and the rest tune afresh.
    The source is only read; a workdir that already has its own optuna.db (a resumed run) keeps
    it.

        python -m experiments.benchmark --config experiments/configs/benchmark_shipped.py \
            --workdir workdirs/new_lopt --config.tuning.reuse_from=workdirs/benchmark_shipped_ood
    """
    if not source:
        return None
    path = Path(source)
    path = path / "optuna.db" if path.is_dir() else path
    if not path.is_file():
        raise ValueError(f"config.tuning.reuse_from={source!r}: no Optuna database at {path}")
    target = Path(workdir) / "optuna.db"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    return str(path.resolve())


def run_benchmark(config, workdir, tracker) -> dict:
    """The whole benchmark of `config` into `workdir`; returns the results.json content."""
    from tqdm import tqdm

    start = time.perf_counter()
    reused_from = reuse_tuning(config.tuning.get("reuse_from", ""), workdir)
    baselines = benchmark_suite.parse_names(config.baselines)
    for name in baselines:
        tuning.get_baseline(name)  # fail on a typo before any compilation
    learned = [benchmark_suite.resolve_learned(s, int(config.num_steps), int(config.lopt_init_seed))
               for s in benchmark_suite.parse_names(config.learned)]
    suite = benchmark_suite.build_suite(config)
    tracker.log_params({"suite": [t.label for t in suite], "baselines": baselines,
                        "learned": [s.label for s in learned]})
    total = len(suite) * (2 * len(baselines) + len(learned))
    records = []
    with tqdm(total=total, desc="benchmark (tune + final runs)", unit="run") as progress:
        for suite_task in suite:
            progress.set_postfix_str(suite_task.label)
            records.append(benchmark_task(suite_task, baselines, learned, config, workdir,
                                          tracker, progress))
    total_s = time.perf_counter() - start
    tuning_s = sum(r["tuning_wall_s"] for r in records)
    compile_s = sum(r["compile_wall_s"] for r in records)
    return {
        "schema_version": SCHEMA_VERSION,
        "command": " ".join(["python -m experiments.benchmark", *sys.argv[1:]]),
        "device": str(jax.devices()[0].device_kind),
        "settings": {
            "num_steps": int(config.num_steps), "eval_every": int(config.eval_every),
            "eval_batches": int(config.eval_batches),
            "full_split_eval": bool(config.full_split_eval), "seeds": list(config.seeds),
            "smoothing_window": int(config.smoothing_window),
            "curve_stride": int(config.curve_stride),
            "tuning": dataclasses.asdict(tuning_spec(config)), "tuning_reused_from": reused_from,
            "baselines": baselines, "learned": benchmark_suite.parse_names(config.learned)},
        "wall_time_s": {"total": total_s, "compile": compile_s, "tuning": tuning_s,
                        "final_runs_and_rest": total_s - tuning_s - compile_s},
        "tasks": records,
        "summary": headline_summary(records, [s.label for s in learned]),
    }
