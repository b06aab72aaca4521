"""Markdown reports of an HPO or a NAS workdir (from what results.json holds).

    text = hpo_report(results)      # report.md of experiments.hpo
    text = nas_report(results)      # report.md of experiments.nas
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "inf" if math.isinf(value) else "nan" if math.isnan(value) else f"{value:.4g}"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={_fmt(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return "(" + ", ".join(_fmt(v) for v in value) + ")"
    return str(value)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def hpo_report(results: Mapping[str, Any]) -> str:
    settings = results["settings"]
    split_note = ("Protocol: generalization. Trials train on `train` and are scored on `valid` "
                  "(mean over tuning seeds of the last `last_k` validation losses, +inf for a "
                  "divergence); `test` is never read by the search.")
    if results["objective"] == "meta":
        split_note = ("Objective: validation meta-loss (meta-objective on the `valid` split) of "
                      "fixed evaluation tasks after a short meta-training run per trial.")
    out = [f"# Hyperparameter search: {results['study_name']}", "", split_note, "",
           f"Sampler `{results['sampler']}`, pruner `{results['pruner']}`; "
           f"{results['num_complete']} complete, {results['num_pruned']} pruned, "
           f"{results['num_failed']} failed trials.", "",
           "Search space:", "", "```json", json.dumps(results["space"], indent=1), "```", "",
           f"Objective settings: `{json.dumps(settings, default=str)}`", "",
           f"**Best**: {_fmt(results['best_params'])} -> {_fmt(results['best_value'])}", ""]
    if results["at_edge"]:
        out += [f"Best value on the edge of its range (widen it): {results['at_edge']}", ""]
    if results["importance"]:
        out += ["## Sensitivity (fANOVA importance)", "",
                table(["parameter", "importance"], list(results["importance"].items())), ""]
    else:
        out += ["fANOVA importance: not computed (fewer than 2 distinct complete trials).", ""]
    out += [f"![{p}]({p})" for p in results["plots"]] + [""]
    trials = results["trials"]
    out += ["## Trials", "", table(["#", "state", "value", "params"],
                                   [[t["number"], t["state"], t["value"], t["params"]]
                                    for t in trials]), ""]
    if "comparison" in results:
        out += _comparison_section(results["comparison"])
    return "\n".join(out) + "\n"


def _comparison_section(cmp: Mapping[str, Any]) -> list[str]:
    out = ["## Tuned Adam with N trials vs learned optimizers with 0 (and a few)", "",
           "Valid and test scores are from separate final runs (their own seeds) of the "
           "configuration each search picked after N trials; test is read only there. "
           "Learned optimizers: shipped weights at their card's learning rate (0 trials) and, "
           "where listed, after N trials of the same search over their learning rate on a "
           "range centred on the card's (mean over search seeds)"
           + ("." if cmp["learned_optimizers_tuned"] else
              " (none of these takes a learning rate, so none is tuned)."),
           ""]
    by_budget: dict[int, list] = {}
    for row in cmp["adam"]:
        by_budget.setdefault(row["trials"], []).append(row)
    rows = []
    for budget, group in sorted(by_budget.items()):
        mean = lambda key, g=group: sum(r[key] for r in g) / len(g)  # noqa: E731
        rows.append([f"Adam, {budget} trials", len(group), mean("search_valid"), mean("valid"),
                     mean("test")])
    rows += [[f"{r['name']} ({r['trials']} trials)", r.get("search_seeds", "-"),
              r.get("search_valid", "-"), r["valid"], r["test"]]
             for r in cmp["learned_optimizers"]]
    out += [table(["optimizer", "search seeds", "search objective (valid)", "final valid",
                   "final test"], rows), "", f"![budget curve]({cmp['plot']})", ""]
    return out


def nas_report(results: Mapping[str, Any]) -> str:
    out = [f"# Architecture search: {results['family']} on {', '.join(results['datasets'])}", "",
           "Protocol: generalization. Candidates are scored on `valid` by the estimator; `test` "
           "is read only by the final comparison (separate runs, their own seeds). Accuracy "
           "intervals: 95% bootstrap (scipy.stats.bootstrap) over test examples of the "
           "per-example accuracy averaged over the final seeds.", "",
           f"Estimator `{results['estimator']}`; strategies {results['strategies']} at equal "
           f"budget ({results['num_trials']} trials each, search seeds "
           f"{results['search_seeds']}).", ""]
    for dataset, data in results["per_dataset"].items():
        out += [f"## {dataset}", "", "Search (best estimator score, mean over search seeds):", "",
                table(["strategy", "best score", "min", "max", "train steps", "wall s"],
                      [[s, r["best_mean"], r["best_min"], r["best_max"], r["cost_steps"],
                        r["wall_s"]] for s, r in data["strategies"].items()]),
                "", f"![search curves]({data['plot']})", "",
                "Found vs the zoo's default (final runs):", "",
                table(["architecture", "test accuracy", "95% CI", "test loss", "params",
                       "ms/step", "arch"],
                      [[r["label"], r["test_accuracy"], r["accuracy_ci"], r["test_loss"],
                        r["num_params"], r["ms_per_step"], r["arch"]] for r in data["final"]]),
                ""]
    return "\n".join(out) + "\n"
