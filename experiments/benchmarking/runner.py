"""The benchmark's body: per task, tune the tuned track once, run everything on the final seeds,
score each run under each protocol against tuned Adam and Adam at 1e-3.

    results = run_benchmark(spec, workdir, tracker)     # the results.json content
    benchmarking.results.write_results(results, workdir, tracker)

`experiments.benchmark` is the command over this; `benchmarking.results` documents the schema.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import jax
import numpy as np

from experiments.benchmarking import metrics as bm
from experiments.benchmarking import offline_eval, scoring, summary
from experiments.benchmarking import plan as benchmark_plan
from experiments.benchmarking import suite as benchmark_suite
from experiments.benchmarking import tuning as tuning_lib
from experiments.benchmarking.eval_params import with_eval_params
from experiments.benchmarking.results import SCHEMA_VERSION
from experiments.benchmarking.spec import REFERENCE
from experiments.evaluation import EvaluationSettings, snapshot_params
from learned_opt import training


def compile_run(task, entry, num_seeds, spec):
    """One run function per (task, entry), compiled ahead of time for `num_seeds` seeds and
    shared by tuning and the final runs. It evaluates in the loop only what tuning may read
    (`spec.tuning.eval_splits`) and keeps parameter snapshots for the final evaluation.
    Returns (compiled run, compile seconds, the task as run: see `eval_params`)."""
    run_task, make_tx = with_eval_params(task, entry.make_tx, entry.eval_params)
    run = training.make_run_fn(
        run_task, make_tx, num_steps=spec.num_steps, eval_every=spec.eval_every,
        eval_splits=spec.tuning.eval_splits, eval_batches=spec.eval_batches,
        full_split_eval=spec.full_split_eval, keep_snapshots=True)
    keys = training.seed_keys(tuple(range(num_seeds)))
    start = time.perf_counter()
    compiled = run.lower(entry.tx_args, keys).compile()
    return compiled, time.perf_counter() - start, run_task


def final_run(compiled_run, eval_fn, tx_args, seeds):
    """Train on the final `seeds`, then evaluate the snapshots on train/valid/test.

    Returns (host Curves whose `evals` hold all three splits (no snapshots), the run's seconds,
    the first seed's parameters at the end of training (host arrays, for its predictions)).
    """
    keys = training.seed_keys(tuple(seeds))
    start = time.perf_counter()
    curves = jax.block_until_ready(compiled_run(tx_args, keys))
    run_s = time.perf_counter() - start
    evals = eval_fn(curves.snapshots, keys)
    final_params = snapshot_params(curves.snapshots, seed_index=0, eval_index=-1)
    curves = jax.device_get(curves._replace(evals=evals, snapshots=None))
    return curves, run_s, final_params


def _tuning_record(result: tuning_lib.TuningResult) -> dict:
    return {"num_trials": len(result.trials), "study": result.study_name,
            "best": result.best,
            "best_value": {p: bm.finite_or_none(v) for p, v in result.best_value.items()},
            "at_edge": result.at_edge,
            "trials": [[h, {p: bm.finite_or_none(v) for p, v in values.items()}]
                       for h, values in result.trials]}


def _run_entry(task, entry, spec, storage, study_name, cache):
    """(tuning record | None, {protocol: (hparams | None, host curves, first seed's final
    params)}, seconds of one final
    run, of compiling, of tuning trials, the task as run, the label whose compiled run it
    shares or None). `cache` holds the task's compiled runs by (compile key, seeds) and its
    final evaluations by evaluated-parameter structure: each compiles once per task."""

    def compiled_for(num_seeds):
        key = (entry.compile_key or entry.label, num_seeds)
        if key in cache:
            compiled, _, run_task, owner = cache[key]
            return compiled, 0.0, run_task, owner
        compiled, seconds, run_task = compile_run(task, entry, num_seeds, spec)
        cache[key] = (compiled, seconds, run_task, entry.label)
        return compiled, seconds, run_task, None

    compiled, compile_s, run_task, shared_with = compiled_for(len(spec.seeds))
    eval_key = ("eval", entry.eval_params)
    if eval_key not in cache:
        cache[eval_key] = training.make_eval_fn(run_task, scoring.FINAL_SPLITS,
                                                eval_batches=spec.eval_batches,
                                                full_split_eval=spec.full_split_eval)
    eval_fn = cache[eval_key]
    if entry.tunable is None:
        curves, run_s, params = final_run(compiled, eval_fn, entry.tx_args, spec.seeds)
        return (None, {p: (None, curves, params) for p in spec.protocols}, run_s, compile_s, 0.0,
                run_task, shared_with)
    tuning_run = compiled
    if len(spec.tuning.seeds) != len(spec.seeds):  # the compiled run fixes the seed count
        tuning_run, extra_s, _, _ = compiled_for(len(spec.tuning.seeds))
        compile_s += extra_s
    start = time.perf_counter()
    result = tuning_lib.tune(
        task, entry.tunable, spec.tuning, storage=storage, study_name=study_name,
        run_fn=lambda hparams, keys: tuning_run(entry.with_hparams(hparams), keys))
    tuning_s = time.perf_counter() - start
    runs, by_hparams, run_s = {}, {}, 0.0
    for protocol in spec.protocols:
        hparams = result.best[protocol]
        key = tuple(sorted(hparams.items()))
        if key not in by_hparams:  # both protocols picked the same winner: one final run
            args = entry.with_hparams(hparams)
            curves, run_s, params = final_run(compiled, eval_fn, args, spec.seeds)
            by_hparams[key] = (curves, params)
        runs[protocol] = (hparams, *by_hparams[key])
    return _tuning_record(result), runs, run_s, compile_s, tuning_s, run_task, shared_with


def benchmark_task(suite_task, entries, learned, spec, workdir, tracker, progress,
                   saver=None) -> dict:
    """Every entry on one task; returns the task's record (schema: `benchmarking.results`).
    With a `saver` (`offline_eval.PredictionSaver`), each final run's first-seed model saves
    its valid/test predictions and its run records the model's name."""
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
    storage = f"sqlite:///{Path(workdir).resolve() / 'optuna.db'}"
    study_name = f"{suite_task.label}:{(info or {}).get('fingerprint', '')}"
    host_runs, tuning_s, compile_total, cache = {}, 0.0, 0.0, {}
    for entry in entries:
        tuning_record, runs, run_s, compile_s, entry_tuning_s, run_task, shared = _run_entry(
            task, entry, spec, storage, study_name, cache)
        compile_total += compile_s
        tuning_s += entry_tuning_s
        if tuning_record is not None:
            tracker.log_params({f"tuned/{suite_task.label}/{entry.label}": tuning_record["best"]})
        host_runs[entry.label] = (runs, run_task)
        state_bytes = training.optimizer_state_bytes(run_task, entry.make_tx(entry.tx_args))
        record["optimizers"][entry.label] = {
            "kind": entry.kind, "track": entry.track, "description": entry.description,
            "config": entry.config, "learned_label": entry.learned_label,
            "num_trials": 0 if tuning_record is None else tuning_record["num_trials"],
            "tuning": tuning_record, "time_per_step_s": run_s / spec.num_steps,
            "compile_s": compile_s, "shares_compiled_run_with": shared,
            "state_bytes": state_bytes,
            "state_bytes_per_param": state_bytes / num_params}
        progress.update(1)
    saved = {}  # id(final params) -> model name: both protocols on one run save it once
    for label, (runs, run_task) in host_runs.items():
        entry_record = record["optimizers"][label]
        entry_record["runs"] = {}
        for protocol, (hparams, curves, params) in runs.items():
            run = scoring.protocol_run(curves, protocol, spec.smoothing_window, spec.curve_stride)
            run["hparams"] = hparams
            run["vs"] = {ref: scoring.compare(curves, host_runs[ref][0][protocol][1], protocol,
                                              spec.smoothing_window)
                         for ref in REFERENCE.values() if ref in host_runs}
            if saver is not None:
                if id(params) not in saved:
                    saved[id(params)] = saver.save(run_task, suite_task.label, label, protocol,
                                                   params)
                run["evaluation_model"] = saved[id(params)]
            entry_record["runs"][protocol] = run
            for index, step in enumerate(np.asarray(curves.eval_steps)):
                tracker.log_metrics(int(step), {
                    f"{protocol}/{suite_task.label}/{label}/{split}_loss": float(np.mean(
                        np.asarray(curves.evals[split]["loss"])[:, index]))
                    for split in scoring.FINAL_SPLITS})
    record["tuning_wall_s"] = tuning_s
    record["compile_wall_s"] = compile_total
    return record


def attach_evaluation(records, workdir, spec) -> float:
    """Evaluate the saved predictions (`offline_eval.evaluate_saved`) and give each run with a
    model its `evaluation` summary; returns the seconds it took."""
    start = time.perf_counter()
    settings = EvaluationSettings(n_resamples=spec.evaluation_resamples,
                                  seed=spec.bootstrap_seed)
    summaries = offline_eval.evaluate_saved(workdir, settings)
    for record in records:
        for entry_record in record["optimizers"].values():
            for run in entry_record["runs"].values():
                name = run.get("evaluation_model")
                run["evaluation"] = (None if name is None
                                     else dict(summaries[name], seed=spec.seeds[0]))
    return time.perf_counter() - start


def reuse_tuning(source: str, workdir) -> str | None:
    """Start `workdir`'s Optuna storage from a copy of another benchmark's (`source`: that
    workdir or its optuna.db), so tuned optimizers are not tuned again; returns the resolved
    source, or None when nothing is reused. Studies are named by task fingerprint, optimizer and
    TuningSpec digest, so only identical tuning setups are reused and the rest tune afresh.
    The source is only read; a workdir that already has its own optuna.db (a resumed run) keeps
    it.

        python -m experiments.benchmark --config experiments/configs/benchmark_shipped.py \
            --workdir workdirs/new_lopt --config.tuning.reuse_from=workdirs/benchmark_shipped
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


def prepare(spec) -> tuple[list, list, list]:
    """(learned specs, entries, suite): everything resolved and validated, nothing compiled."""
    learned = [benchmark_suite.resolve_learned(s, spec.num_steps, spec.lopt_init_seed)
               for s in spec.learned]
    entries = benchmark_plan.build_plan(spec, learned)
    return learned, entries, benchmark_suite.build_suite(spec.suite)


def run_benchmark(spec, workdir, tracker) -> dict:
    """The whole benchmark of `spec` (a `BenchmarkSpec`) into `workdir`; returns the
    results.json content."""
    from tqdm import tqdm

    start = time.perf_counter()
    learned, entries, suite = prepare(spec)
    reused_from = reuse_tuning(spec.reuse_from, workdir)
    tracker.log_params({"suite": [t.label for t in suite], "protocols": list(spec.protocols),
                        "entries": {e.label: e.track for e in entries}})
    saver = (offline_eval.PredictionSaver(workdir, tracker,
                                          sample_rows=spec.prediction_sample_rows)
             if spec.predictions else None)
    records = []
    with tqdm(total=len(suite) * len(entries), desc="benchmark (tune + final runs)",
              unit="optimizer") as progress:
        for suite_task in suite:
            progress.set_postfix_str(suite_task.label)
            records.append(benchmark_task(suite_task, entries, learned, spec, workdir, tracker,
                                          progress, saver))
    evaluation_s = attach_evaluation(records, workdir, spec) if saver and saver.saved else 0.0
    total_s = time.perf_counter() - start
    tuning_s = sum(r["tuning_wall_s"] for r in records)
    compile_s = sum(r["compile_wall_s"] for r in records)
    aggregates = summary.summarize_results(records, spec)
    if evaluation_s:
        aggregates["calibration"] = offline_eval.calibration_table(records, spec.protocols)
    return {
        "schema_version": SCHEMA_VERSION,
        "command": " ".join(["python -m experiments.benchmark", *sys.argv[1:]]),
        "device": str(jax.devices()[0].device_kind),
        "protocols": list(spec.protocols),
        "references": dict(REFERENCE),
        "tracks": {e.label: e.track for e in entries},
        # How the self-tuning track ran each learned optimizer (`plan.build_plan`).
        "settings": spec.as_dict() | {"tuning_reused_from": reused_from,
                                      "self_tuning_learned": benchmark_plan.SELF_TUNING_LEARNED},
        "wall_time_s": {"total": total_s, "compile": compile_s, "tuning": tuning_s,
                        "offline_evaluation": evaluation_s,
                        "final_runs_and_rest": total_s - tuning_s - compile_s - evaluation_s},
        "tasks": records,
        "summary": aggregates,
    }
