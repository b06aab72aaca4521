"""`evaluation.md`: the results of `report.evaluate_run` as readable tables."""

from __future__ import annotations

import math


def _num(value, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.{digits}g}"
    return str(value)


def _ci(interval: dict) -> str:
    return f"{_num(interval['value'])} [{_num(interval['low'])}, {_num(interval['high'])}]"


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_num(c) if not isinstance(c, str) else c for c in row) + " |"
              for row in rows]
    return lines + [""]


def render_markdown(results: dict) -> str:
    lines = ["# Evaluation", "", f"Protocol: {results['protocol']}.", ""]
    models = results["models"]
    metric_names = ("accuracy", "f1_macro", "roc_auc_ovr", "log_loss")
    rows = []
    for name, model in models.items():
        test = model["splits"]["test"]
        rows.append([name, *(_ci(test["intervals"][m]) for m in metric_names),
                     _ci(test["calibration"]["uniform"]["ece_interval"]),
                     test["num_examples"]])
    lines += ["## Test metrics (value [95% interval])", ""]
    lines += _table(["model", *metric_names, "ECE (15 equal-width bins)", "examples"], rows)
    if any(m["task_kind"] == "language_model" for m in models.values()):
        rows = [[n, m["splits"]["test"].get("perplexity"),
                 m["splits"]["test"].get("bits_per_character")] for n, m in models.items()]
        lines += ["## Language model (test)", ""]
        lines += _table(["model", "perplexity", "bits per character"], rows)

    lines += ["## Calibration (test; temperature fitted on valid)", ""]
    rows = []
    for name, model in models.items():
        cal, temp = model["splits"]["test"]["calibration"], model["temperature_scaling"]
        rows.append([name, cal["uniform"]["ece"], cal["quantile"]["ece"], cal["uniform"]["mce"],
                     temp["temperature"], temp["before"]["log_loss"], temp["after"]["log_loss"],
                     temp["before"]["ece"], temp["after"]["ece"]])
    lines += _table(["model", "ECE equal-width", "ECE equal-mass", "MCE", "temperature",
                     "log loss before", "after", "ECE before", "after"], rows)

    lines += ["## Selective prediction (test, ranked by max probability)", ""]
    rows = [[n, *m["splits"]["test"]["selective"]["max_prob"]["accuracy_at_coverage"].values(),
             m["splits"]["test"]["selective"]["max_prob"]["area"]] for n, m in models.items()]
    coverages = next(iter(models.values()))["splits"]["test"]["selective"]["max_prob"]
    lines += _table(["model", *(f"acc @ {c} coverage" for c in coverages["accuracy_at_coverage"]),
                     "area under curve"], rows)

    lines += ["## Baselines (test)", ""]
    rows = []
    for name, model in models.items():
        base = model["baselines"]
        rows.append([name, base["random_uniform"]["accuracy"], base["random_uniform"]["f1_macro"],
                     base["random_label_distribution"]["accuracy"],
                     base["random_label_distribution"]["f1_macro"],
                     base["zero_rule"]["accuracy"], base["zero_rule"]["f1_macro"],
                     base["source"]])
    lines += _table(["model's labels", "uniform acc", "uniform F1", "label-dist acc",
                     "label-dist F1", "zero-rule acc", "zero-rule F1", "class counts from"],
                    rows)
    heuristic = results.get("heuristic_baseline")
    if heuristic:
        lines += [f"Heuristic baseline ({heuristic['kind']} on raw inputs of "
                  f"{heuristic['task']}, test): accuracy {_num(heuristic['accuracy'])}, "
                  f"F1 macro {_num(heuristic['f1_macro'])}.", ""]

    lines += ["## High-error slices (test)", ""]
    for name, model in models.items():
        finder = model["slices"]["high_error_slices"]
        lines.append(f"{name}: overall error {_num(finder['overall_error'])}; tested on "
                     f"{finder['tested_on']}.")
        lines.append("")
        rows = [[s["description"], s["size"], s["error"], s["tested_size"], s["tested_error"],
                 s["adjusted_p_value"], "yes" if s["significant"] else "no"]
                for s in finder["slices"]]
        lines += _table(["slice", "size", "error", "tested size", "tested error",
                         "BH-adjusted p", "significant"], rows) if rows else ["(none)", ""]

    paradoxes = [p for p in results["paradoxes"] if p["paradox"]]
    lines += ["## Simpson's paradox checks (test)", "",
              f"{len(results['paradoxes'])} model pairs x slicings checked; "
              f"{len(paradoxes)} paradoxes.", ""]
    for p in paradoxes:
        winner = next(iter(p["slice_winners"].values()))
        lines.append(f"- {p['models'][0]} vs {p['models'][1]}, sliced by {p['slicing']}: "
                     f"{winner} wins every slice but {p['pooled_winner']} wins pooled.")
    lines.append("")

    behaviour = {n: m["behaviour"] for n, m in models.items() if m.get("behaviour")}
    if behaviour:
        lines += ["## Behavioural checks", ""]
        rows = [[n, c["name"], c["kind"], c["pass_rate"], c["threshold"],
                 "yes" if c["passed"] else "no"]
                for n, checks in behaviour.items() for c in checks.values()]
        lines += _table(["model", "check", "kind", "pass rate", "threshold", "passed"], rows)
    lines += ["Plots: " + ", ".join(results.get("plots", [])), ""]
    return "\n".join(lines)
