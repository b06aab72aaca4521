"""results.json of a benchmark run: its schema, the schema check, and writing the run's files.

What a run computes (`benchmarking.runner`, command `experiments.benchmark`):

    python -m experiments.benchmark --config experiments/configs/benchmark_quick.py \
        --workdir workdirs/benchmark [--config.num_steps=500 ...]

For every task of the suite (`benchmarking.suite`): each baseline is tuned on the
validation split (`benchmarking.tuning`, Optuna study in `<workdir>/optuna.db`) with the tuning
seeds, then every baseline (at its best hyperparameters) and every learned optimizer (never tuned)
trains for `num_steps` on the *final* seeds, as one jitted scan vmapped over seeds
(`learned_opt.training`). Only these final runs read the test split, and only for reporting.

Outputs in the workdir (all logged through `experiments.tracking`): `results.json` (schema below),
`report.md`, `curves_<task>.png`, `speedup.png`, the tracker's config/env/metrics files, and
`optuna.db`.

results.json (schema_version 1):
  settings: num_steps, eval_every, eval_batches, seeds (final runs), smoothing_window,
            curve_stride, tuning (the TuningSpec), tuning_reused_from (the optuna.db the
            workdir's tuning started from, or null), baselines, learned (specs).
  wall_time_s: {"total", "compile" (one run function per task x optimizer), "tuning" (trials,
               compile excluded), "final_runs_and_rest"}; device: str
  tasks: list of {
    label, origin ("named" | "heldout" | "ood"), family, num_params, dataset (task.dataset_info()
    or null), random_guess_accuracy, zero_rule_accuracy (test split; null if not classification),
    distribution: {learned label: "held-out task of meta-training family F" | ...},
    distribution_kind: {learned label: benchmark_suite.DISTRIBUTION_KINDS entry},
    optimizers: {label: {
      kind ("baseline" | "learned"), description, hparams (baselines) | config (learned),
      tuning: {best_value, num_trials, at_edge, study, trials: [[hparams, value], ...]} | null,
      final: {train_loss, valid_loss, test_loss, test_accuracy?: summary}  (summary = {mean,
             std, min, max, n, n_finite} over seeds at step num_steps; non-finite seeds counted
             in n - n_finite, never averaged),
      per_seed: {same keys: [value | null per seed]}, diverged: [bool per seed],
      speedup: {target, adam_steps, steps, speedup, per_seed: [speedup | null]} | null,
      time_per_step_s (run wall time / num_steps, all seeds vmapped, evaluation included),
      compile_s, state_bytes, state_bytes_per_param,
      curves: {eval_steps, train|valid|test: {metric: [[per seed]]},
               train_loss_steps, train_loss_smoothed: [[per seed, every curve_stride steps]]}}}}
  summary: {learned label: {distribution kind ("heldout_in_family" | "out_of_distribution" |
            "named_in_family" | "not_meta_trained"): {num_tasks, speedup_ge_2,
            reached_adam_target, within_10pct_of_adam (final train loss),
            test_within_10pct_of_adam, diverged, speedups, median_speedup}}}
Speedup semantics (target = tuned Adam's final smoothed train loss, None = never reached):
`benchmarking.metrics`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from experiments.benchmarking import report as benchmark_report
from experiments.benchmarking import suite as benchmark_suite

SCHEMA_VERSION = 1
FINAL_SPLITS = ("train", "valid", "test")


_TOP_KEYS = ("schema_version", "command", "device", "settings", "wall_time_s", "tasks", "summary")
_TASK_KEYS = ("label", "origin", "family", "num_params", "dataset", "random_guess_accuracy",
              "zero_rule_accuracy", "distribution_kind", "distribution", "optimizers")
_OPTIMIZER_KEYS = ("kind", "description", "tuning", "final", "per_seed", "diverged", "speedup",
                   "time_per_step_s", "compile_s", "state_bytes", "state_bytes_per_param", "curves")
_SUMMARY_KEYS = ("mean", "std", "min", "max", "n", "n_finite")


def check_results_schema(results: dict) -> None:
    """Raise ValueError naming the first place where `results` departs from the schema above."""

    def need(mapping, keys, where):
        if not isinstance(mapping, dict):
            raise ValueError(f"{where}: expected an object, got {type(mapping).__name__}")
        missing = [k for k in keys if k not in mapping]
        if missing:
            raise ValueError(f"{where}: missing key(s) {missing}")

    need(results, _TOP_KEYS, "results")
    if results["schema_version"] != SCHEMA_VERSION:
        raise ValueError(f"results: schema_version {results['schema_version']} != {SCHEMA_VERSION}")
    num_seeds = len(results["settings"]["seeds"])
    for task in results["tasks"]:
        need(task, _TASK_KEYS, "task")
        if task["origin"] not in benchmark_suite.ORIGINS:
            raise ValueError(f"task {task['label']}: origin {task['origin']!r} not in "
                             f"{benchmark_suite.ORIGINS}")
        for label, entry in task["optimizers"].items():
            where = f"task {task['label']}, optimizer {label}"
            need(entry, _OPTIMIZER_KEYS, where)
            if entry["kind"] not in ("baseline", "learned"):
                raise ValueError(f"{where}: kind {entry['kind']!r}")
            for key in ("train_loss", "valid_loss", "test_loss"):
                need(entry["final"].get(key), _SUMMARY_KEYS, f"{where}, final.{key}")
                if len(entry["per_seed"][key]) != num_seeds:
                    raise ValueError(f"{where}: per_seed.{key} has "
                                     f"{len(entry['per_seed'][key])} values, expected {num_seeds}")
            need(entry["curves"], ("eval_steps", "train", "valid", "test", "train_loss_steps",
                                   "train_loss_smoothed"), f"{where}, curves")
            if entry["speedup"] is not None:
                need(entry["speedup"], ("target", "adam_steps", "steps", "speedup", "per_seed"),
                     f"{where}, speedup")


def _to_builtin(value):
    """NumPy scalars / arrays (e.g. from dataset_info) as JSON builtins."""
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def write_results(results: dict, workdir, tracker) -> list[Path]:
    """results.json, report.md and the PNGs into `workdir`, each logged as an artifact."""
    check_results_schema(results)
    workdir = Path(workdir)
    results_path = workdir / "results.json"
    results_path.write_text(json.dumps(results, indent=1, allow_nan=False, default=_to_builtin))
    paths = [results_path, *benchmark_report.write_report(results, workdir)]
    for path in paths:
        tracker.log_artifact(path)
    return paths
