"""results.json of a benchmark run: its schema, the schema check, and writing the run's files.

What a run computes (`benchmarking.runner`, command `experiments.benchmark`):

    python -m experiments.benchmark --config experiments/configs/benchmark_quick.py \
        --workdir workdirs/benchmark [--config.protocol=optimization ...]

For every task of the suite (`benchmarking.suite`) and every entry of the plan
(`benchmarking.plan`): a tuned-track entry is tuned once on the tuning seeds
(`benchmarking.tuning`, Optuna study in `<workdir>/optuna.db`); each protocol picks its winner
from those trials (optimization: final smoothed TRAINING loss; generalization: VALIDATION
loss) and the winner trains for `num_steps` on the *final* seeds (one run when both protocols
pick the same winner); a self-tuning entry (0 trials) runs once on the final seeds. Each run
is one jitted scan vmapped over seeds (`learned_opt.training`). Only these final runs read the
test split, and only for reporting. Each run is then scored under each protocol
(`benchmarking.scoring`) against both references, and aggregated (`benchmarking.summary`).

Outputs in the workdir (all logged through `experiments.tracking`): `results.json` (schema below),
`report.md`, `curves_<task>.png`, `profile_<protocol>_<track>.png`, the tracker's
config/env/metrics files, `optuna.db`, and (config.predictions) `evaluation/`: the final
models' predictions, evaluation.json / evaluation.md and reliability diagrams
(`benchmarking.offline_eval`).

results.json (schema_version 2):
  protocols: ["optimization", "generalization"] (those run); references: {track: reference
  label} ("tuned": "adam", "self_tuning": "adam@1e-3"); tracks: {label: "tuned" | "self_tuning"}
  settings: the BenchmarkSpec (`benchmarking.spec`) as a dict, plus tuning_reused_from
  wall_time_s: {"total", "compile", "tuning" (trials), "offline_evaluation",
  "final_runs_and_rest"}; device: str
  command: str
  tasks: list of {
    label, origin ("named" | "heldout" | "ood"), family, num_params, dataset (task.dataset_info()
    or null), random_guess_accuracy, zero_rule_accuracy (test split; null if not classification),
    distribution: {learned label: "held-out task of meta-training family F" | ...},
    distribution_kind: {learned label: benchmark_suite.DISTRIBUTION_KINDS entry},
    tuning_wall_s, compile_wall_s,
    optimizers: {label: {
      kind ("baseline" | "learned"), track ("tuned" | "self_tuning"), description, config
      (learned: its card) | null, learned_label (the learned optimizer's label) | null,
      num_trials (0 in the self-tuning track),
      tuning: {num_trials, study, best: {protocol: hparams}, best_value: {protocol: objective},
               at_edge: {protocol: [names]}, trials: [[hparams, {protocol: objective}]]} | null,
      time_per_step_s (run wall time / num_steps, all seeds vmapped, evaluation included),
      compile_s (0 when it ran on another entry's compiled run), shares_compiled_run_with
      (that entry's label: Adam(1e-3) and AdamW run on tuned Adam's, equal learned
      architectures on one) | null, state_bytes, state_bytes_per_param,
      runs: {protocol: {
        hparams (this protocol's winner) | null (self-tuning),
        final: {train_loss, valid_loss, test_loss, test_accuracy?: summary}  (summary = {mean,
               std, min, max, n, n_finite} over seeds at the last evaluation; non-finite seeds
               counted in n - n_finite, never averaged),
        per_seed: {same keys: [value | null per seed]}, diverged: [bool per seed],
        score: {name, summary keys, per_seed, initial_per_seed}  (optimization: final smoothed
               train loss; generalization: test loss at the best-validation evaluation),
        at_best_valid (generalization only): {eval_step: [per seed], valid_loss, test_loss,
               test_accuracy?: summary, test_<metric>_per_seed},
        vs: {reference label: {speedup: {target, reference_steps, steps, speedup, per_seed},
             normalized_loss: [per seed | null], normalized_status: ["ok" | "diverged" |
             "no_scale" per seed], won: bool}},
        curves: {eval_steps, train|valid|test: {metric: [[per seed]]}, train_loss_steps,
                 train_loss_smoothed: [[per seed, every curve_stride steps]]},
        evaluation_model, evaluation (only with config.predictions; null on a task that is not
               a classification task): the first final seed's end-of-training model's offline
               evaluation, `benchmarking.offline_eval` {model, seed, test_accuracy,
               test_f1_macro, test_f1_per_class, test_log_loss, ece_before, ece_after,
               temperature, per_class_accuracy, reliability_diagram}}}}}}
  summary: {by_protocol: {protocol: {label: {kind, track, num_trials: [per task],
            groups: {"all" | distribution kind: {reference: {num_tasks, num_seeds,
            single_seed, tasks_won, fraction_won, reached_target, diverged_tasks,
            speedup: {n, median, median_ci, iqm, iqm_ci}, normalized_loss: {same, n_no_scale}}}}}}},
            profiles: {protocol: {track: {labels, tasks, costs: [[seed-mean score | null]]}}},
            calibration (with an offline evaluation): `offline_eval.calibration_table`}
Speedup semantics (None = never reached): `benchmarking.metrics`; aggregates:
`benchmarking.summary` and `benchmarking.stats` (95% percentile-bootstrap intervals over
tasks x seeds).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from experiments.benchmarking import report as benchmark_report
from experiments.benchmarking import suite as benchmark_suite

SCHEMA_VERSION = 2
FINAL_SPLITS = ("train", "valid", "test")
PROTOCOLS = ("optimization", "generalization")
TRACKS = ("tuned", "self_tuning")

_TOP_KEYS = ("schema_version", "command", "device", "protocols", "references", "tracks",
             "settings", "wall_time_s", "tasks", "summary")
_TASK_KEYS = ("label", "origin", "family", "num_params", "dataset", "random_guess_accuracy",
              "zero_rule_accuracy", "distribution_kind", "distribution", "optimizers")
_OPTIMIZER_KEYS = ("kind", "track", "description", "config", "learned_label", "num_trials",
                   "tuning", "runs", "time_per_step_s", "compile_s",
                   "shares_compiled_run_with", "state_bytes",
                   "state_bytes_per_param")
_RUN_KEYS = ("hparams", "final", "per_seed", "diverged", "score", "vs", "curves")
_VS_KEYS = ("speedup", "normalized_loss", "normalized_status", "won")
_SUMMARY_KEYS = ("mean", "std", "min", "max", "n", "n_finite")
_AGGREGATE_KEYS = ("num_tasks", "num_seeds", "single_seed", "tasks_won", "fraction_won",
                   "reached_target", "diverged_tasks", "speedup", "normalized_loss")


def _need(mapping, keys, where):
    if not isinstance(mapping, dict):
        raise ValueError(f"{where}: expected an object, got {type(mapping).__name__}")
    missing = [k for k in keys if k not in mapping]
    if missing:
        raise ValueError(f"{where}: missing key(s) {missing}")


def _check_run(run, protocol, references, num_seeds, where):
    _need(run, _RUN_KEYS, where)
    for key in ("train_loss", "valid_loss", "test_loss"):
        _need(run["final"].get(key), _SUMMARY_KEYS, f"{where}, final.{key}")
        if len(run["per_seed"][key]) != num_seeds:
            raise ValueError(f"{where}: per_seed.{key} has {len(run['per_seed'][key])} values, "
                             f"expected {num_seeds}")
    _need(run["score"], _SUMMARY_KEYS + ("name", "per_seed"), f"{where}, score")
    if protocol == "generalization":
        _need(run.get("at_best_valid"), ("eval_step", "valid_loss", "test_loss"),
              f"{where}, at_best_valid")
    _need(run["vs"], references, f"{where}, vs")
    for ref, vs in run["vs"].items():
        _need(vs, _VS_KEYS, f"{where}, vs.{ref}")
        _need(vs["speedup"], ("target", "reference_steps", "steps", "speedup", "per_seed"),
              f"{where}, vs.{ref}.speedup")
        if len(vs["normalized_loss"]) != num_seeds:
            raise ValueError(f"{where}, vs.{ref}: normalized_loss needs {num_seeds} values")
    _need(run["curves"], ("eval_steps", "train", "valid", "test", "train_loss_steps",
                          "train_loss_smoothed"), f"{where}, curves")


def check_results_schema(results: dict) -> None:
    """Raise ValueError naming the first place where `results` departs from the schema above."""
    _need(results, _TOP_KEYS, "results")
    if results["schema_version"] != SCHEMA_VERSION:
        raise ValueError(f"results: schema_version {results['schema_version']} != {SCHEMA_VERSION}")
    protocols = results["protocols"]
    if not protocols or any(p not in PROTOCOLS for p in protocols):
        raise ValueError(f"results: protocols {protocols!r} must be some of {PROTOCOLS}")
    references = list(results["references"].values())
    num_seeds = len(results["settings"]["seeds"])
    for task in results["tasks"]:
        _need(task, _TASK_KEYS, "task")
        if task["origin"] not in benchmark_suite.ORIGINS:
            raise ValueError(f"task {task['label']}: origin {task['origin']!r} not in "
                             f"{benchmark_suite.ORIGINS}")
        for label, entry in task["optimizers"].items():
            where = f"task {task['label']}, optimizer {label}"
            _need(entry, _OPTIMIZER_KEYS, where)
            if entry["kind"] not in ("baseline", "learned"):
                raise ValueError(f"{where}: kind {entry['kind']!r}")
            if entry["track"] not in TRACKS:
                raise ValueError(f"{where}: track {entry['track']!r} not in {TRACKS}")
            if (entry["track"] == "self_tuning") != (entry["tuning"] is None):
                raise ValueError(f"{where}: the self-tuning track (and only it) has no tuning")
            _need(entry["runs"], protocols, f"{where}, runs")
            for protocol in protocols:
                _check_run(entry["runs"][protocol], protocol, references, num_seeds,
                           f"{where}, runs.{protocol}")
    _need(results["summary"], ("by_protocol", "profiles"), "summary")
    _need(results["summary"]["by_protocol"], protocols, "summary.by_protocol")
    for protocol, per_label in results["summary"]["by_protocol"].items():
        for label, item in per_label.items():
            _need(item, ("kind", "track", "num_trials", "groups"), f"summary {protocol} {label}")
            for group, by_ref in item["groups"].items():
                for ref, agg in by_ref.items():
                    _need(agg, _AGGREGATE_KEYS, f"summary {protocol} {label} {group} vs {ref}")


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
