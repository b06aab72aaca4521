"""Benchmark figures of one learned optimizer, gathered for its pretrained card, per protocol.

A card's `heldout_results` block is rebuilt from one or more `results.json` files (schema 2) of
`experiments.benchmark` (e.g. held-out and out-of-distribution runs in separate workdirs):
  tasks:  one entry per task: under each protocol, this optimizer's score next to tuned Adam's
          and Adam(1e-3)'s, its speedups against both, diverged seeds; at its default (the
          self-tuning track) and, when it was tuned, at its tuned learning rate;
  counts: per protocol, entry ("default" | "tuned_lr"), group (GROUPS) and reference: tasks
          with a lower score, reached target, diverged tasks, median / IQM speedup and
          normalised score with 95% bootstrap intervals over tasks x seeds
          (`benchmarking.summary.aggregate`).

    python -m experiments.card_results --config.label=adafac_mlp_mnist1d_mlp \\
        --config.results=workdirs/b_heldout/results.json,workdirs/b_ood/results.json \\
        [--config.card=learned_opt/pretrained/adafac_mlp_mnist1d_mlp.json --config.write=True]

Without `write` the command prints the block; with it, the card's whole `heldout_results`
block is replaced, prose included: `summary` (one generated line per protocol, entry and
group against each reference, so no claim outlives the figures it came from), `commands` and
`settings` (from the results files), `provenance` (git commit, dirty flag and device of each
run, from the `env.json` beside each results.json). Results files of an older schema (which
mixed protocols) are refused. The rest of the card (weights, sha256, training config) is never
touched.
"""

from __future__ import annotations

import json

from experiments.benchmarking import summary as summary_lib
from experiments.benchmarking.plan import TUNED_LR_SUFFIX
from experiments.benchmarking.results import SCHEMA_VERSION

# Card count groups: benchmark's distribution kinds, with the out-of-distribution tasks split
# into the OOD suite and held-out tasks of families it never saw.
GROUPS = {("heldout_in_family", "heldout"): "held_out_in_family",
          ("out_of_distribution", "heldout"): "held_out_of_other_family",
          ("out_of_distribution", "ood"): "ood_suite"}
ENTRIES = {"default": "", "tuned_lr": TUNED_LR_SUFFIX}
REFERENCES = ("adam", "adam@1e-3")


def _round(value, digits=4):
    """`value` to `digits` significant digits (losses span 1e-6 .. 10)."""
    return None if value is None else float(f"{float(value):.{digits}g}")


def _check(results: list[dict]) -> list[str]:
    """The protocols every results file ran (their intersection, in order)."""
    for index, result in enumerate(results):
        version = result.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ValueError(f"results file #{index + 1} has schema_version {version}, expected "
                             f"{SCHEMA_VERSION}: older files mix the protocols; re-run the "
                             "benchmark")
    protocols = [p for p in results[0]["protocols"] if all(p in r["protocols"] for r in results)]
    if not protocols:
        raise ValueError("the results files share no protocol")
    return protocols


def _records(results: list[dict], label: str) -> dict[str, dict]:
    """Task label -> record for the tasks that ran `label`; later files win."""
    records = {}
    for result in results:
        for record in result["tasks"]:
            if label in record["optimizers"]:
                records[record["label"]] = record
    if not records:
        labels = sorted({name for r in results for t in r["tasks"] for name in t["optimizers"]})
        raise ValueError(f"no task in these results ran {label!r}; optimizers found: {labels}")
    return records


def _protocol_entry(run: dict, record: dict, protocol: str) -> dict:
    def score(name):
        entry = record["optimizers"].get(name)
        return None if entry is None else _round(entry["runs"][protocol]["score"]["mean"])

    out = {"score": _round(run["score"]["mean"]), "tuned_adam_score": score("adam"),
           "adam_1e-3_score": score("adam@1e-3"), "hparams": run["hparams"],
           "diverged_seeds": int(sum(bool(d) for d in run["diverged"]))}
    for ref in REFERENCES:
        if ref in run["vs"]:
            speedup = run["vs"][ref]["speedup"]["speedup"]
            out[f"speedup_vs_{ref}"] = None if speedup is None else round(speedup, 2)
    evaluation = run.get("evaluation")
    if evaluation:  # the benchmark's offline evaluation (first final seed)
        out["calibration"] = {key: _round(evaluation[key]) for key in (
            "ece_before", "ece_after", "temperature", "test_f1_macro")}
    if protocol == "generalization":
        best = run["at_best_valid"]
        out["test_accuracy_at_best_valid"] = _round((best.get("test_accuracy") or {}).get("mean"))
        out["final_test_loss"] = _round(run["final"]["test_loss"]["mean"])
    return out


def task_entries(results: list[dict], label: str) -> list[dict]:
    """One dict per task that ran `label`, in file order (later files win on a shared task)."""
    protocols = _check(results)
    entries = []
    for record in _records(results, label).values():
        entry = {"task": record["label"], "distribution": record["distribution"][label]}
        for protocol in protocols:
            entry[protocol] = {
                name: _protocol_entry(record["optimizers"][label + suffix]["runs"][protocol],
                                      record, protocol)
                for name, suffix in ENTRIES.items() if label + suffix in record["optimizers"]}
        entries.append(entry)
    return entries


def _compact(agg: dict) -> dict:
    out = {k: agg[k] for k in ("num_tasks", "num_seeds", "tasks_won", "reached_target",
                               "diverged_tasks")}
    for what in ("speedup", "normalized_loss"):
        for stat in ("median", "iqm"):
            out[f"{what}_{stat}"] = _round(agg[what][stat], 3)
            out[f"{what}_{stat}_ci95"] = [_round(v, 3) for v in agg[what][f"{stat}_ci"]]
    return out


def counts(results: list[dict], label: str, *, num_resamples: int = 2000, seed: int = 0) -> dict:
    """{protocol: {entry: {group: {reference: compact aggregate}}}} over `task_entries`' tasks."""
    protocols = _check(results)
    groups: dict[str, list[dict]] = {}
    for record in _records(results, label).values():
        kind = record["distribution_kind"][label]
        groups.setdefault(GROUPS.get((kind, record["origin"]), kind), []).append(record)
    out = {}
    for protocol in protocols:
        out[protocol] = {}
        for name, suffix in ENTRIES.items():
            by_group = {}
            for group, members in groups.items():
                runs = [r["optimizers"][label + suffix]["runs"][protocol] for r in members
                        if label + suffix in r["optimizers"]]
                if runs:
                    by_group[group] = {ref: _compact(summary_lib.aggregate(
                        runs, ref, num_resamples=num_resamples, seed=seed))
                        for ref in REFERENCES if ref in runs[0]["vs"]}
            if by_group:
                out[protocol][name] = by_group
    return out


_GROUP_WORDS = {"held_out_in_family": "held-out tasks of its meta-training family",
                "held_out_of_other_family": "held-out tasks of the other family",
                "ood_suite": "out-of-distribution suite tasks"}
_ENTRY_WORDS = {"default": "at its card's learning rate (0 trials)",
                "tuned_lr": "with its learning rate tuned"}
_SCORE_WORDS = {"optimization": "train loss", "generalization": "test loss (early stopped)"}


def _interval(c: dict, name: str) -> str:
    low, high = c[f"{name}_ci95"]
    return f"{c[name]} [{low}, {high}]"


def summary_lines(block_counts: dict) -> list[str]:
    """One sentence per protocol, entry, group and reference of `counts(...)`."""
    lines = []
    for protocol, by_entry in block_counts.items():
        for entry, by_group in by_entry.items():
            for group, by_ref in by_group.items():
                for ref, c in by_ref.items():
                    seeds = "/".join(map(str, c["num_seeds"]))
                    lines.append(
                        f"{protocol} protocol, {_ENTRY_WORDS[entry]}, vs "
                        f"{'tuned Adam' if ref == 'adam' else 'Adam(1e-3)'} on "
                        f"{c['num_tasks']} {_group_text(group)} x {seeds} seeds: lower "
                        f"{_SCORE_WORDS[protocol]} on {c['tasks_won']}/{c['num_tasks']}, "
                        f"reached its target on {c['reached_target']}, speedup median "
                        f"{_interval(c, 'speedup_median')}, normalised score median "
                        f"{_interval(c, 'normalized_loss_median')}, diverged on "
                        f"{c['diverged_tasks']}")
    return lines


def _group_text(group: str) -> str:
    return _GROUP_WORDS.get(group, f"{group} tasks")


def settings_text(result: dict) -> str:
    """The run's budget, seeds, tuning and baselines, in one line."""
    s = result.get("settings") or {}
    if not s:
        return "unknown"
    t = s["tuning"]
    # Results written before learned_schedule existed ran the tuned learned rates constant.
    learned_schedule = {"same": f"{s['schedule']} schedule", "constant": "constant"}[
        s.get("learned_schedule", "constant")]
    self_tuning = ("on its own default schedule, constant unless it has one"
                   if s.get("self_tuning_learned") == "own_default_schedule" else "constant")
    learned = (f"the learned optimizers on a {t['grid_points']}-point grid spanning "
               f"{s['learned_grid_decades']} decades around their card's rate "
               f"({learned_schedule})"
               if s.get("learned_tuning", "auto") != "none"
               else "the learned optimizers not tuned (learned_tuning=none)")
    return (f"{s['num_steps']} steps; tuned: {', '.join(s['baselines'])} ({t['grid_points']}-"
            f"point {t['sampler']} over the learning rate, {s['schedule']} schedule) and "
            f"{learned}; self-tuning: "
            f"Adam(1e-3){', ' + ', '.join(s['tuning_free']) if s['tuning_free'] else ''} and "
            f"each learned optimizer at its card's rate ({self_tuning}); tuning seeds "
            f"{t['seeds']}, final seeds "
            f"{s['seeds']}; speedup and normalised score per benchmarking.metrics")


def update_card(card: dict, results: list[dict], label: str,
                provenance: list[dict] | None = None) -> dict:
    """`card` with its `heldout_results` block rebuilt from `results` (a copy); `provenance`:
    per results file, e.g. {"git_commit", "git_dirty", "device"}."""
    card = json.loads(json.dumps(card))
    block_counts = counts(results, label)
    card["heldout_results"] = {
        "results_schema_version": SCHEMA_VERSION,
        "protocols": _check(results),
        "commands": [r.get("command") for r in results],
        "provenance": provenance or [{"device": r.get("device")} for r in results],
        "settings": [settings_text(r) for r in results],
        "summary": summary_lines(block_counts),
        "tasks": task_entries(results, label),
        "counts": block_counts,
    }
    return card
