"""report.md and PNG plots from a benchmark's results.json (schema in `benchmarking.results`).

Every table, plot and headline line names its protocol; every aggregate names its reference and
carries its 95% bootstrap interval over tasks x seeds.

    paths = write_report(json.load(open("workdirs/benchmark/results.json")), "workdirs/benchmark")
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from experiments.benchmarking import summary as summary_lib

PROTOCOL_WORDS = {
    "optimization": ("optimization protocol", "tuned on the final smoothed TRAINING loss; "
                     "score = final smoothed train loss", "train loss"),
    "generalization": ("generalization protocol", "tuned on the VALIDATION loss; score = test "
                       "loss at the best-validation evaluation (early stopping)", "test loss"),
}
REFERENCE_WORDS = {"adam": "tuned Adam", "adam@1e-3": "Adam(1e-3)"}
TRACK_WORDS = {"tuned": "tuned", "self_tuning": "self-tuning"}
_KIND_WORDS = {"all": "", "heldout_in_family": "held-out in-family",
               "out_of_distribution": "out-of-distribution",
               "named_in_family": "named in-family", "not_meta_trained": "(not meta-trained)"}
PROFILE_TAUS = np.geomspace(1.0, 1e3, 200)


def _fmt(value, digits=3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _ci(stat: dict, name: str) -> str:
    low, high = stat[f"{name}_ci"]
    return f"{_fmt(stat[name])} [{_fmt(low)}, {_fmt(high)}]"


def _mean_std(summary) -> str:
    if summary is None or summary.get("mean") is None:
        return "diverged" if summary else "n/a"
    text = f"{summary['mean']:.4g} ± {summary['std']:.2g}"
    if summary["n_finite"] < summary["n"]:
        text += f" ({summary['n'] - summary['n_finite']} non-finite)"
    return text


def safe_name(label: str) -> str:
    """A label as a file-name fragment."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label)


def _references_for(item: dict) -> list[str]:
    """Tuned entries are compared with tuned Adam; self-tuning ones with Adam(1e-3) first."""
    return ["adam"] if item["track"] == "tuned" else ["adam@1e-3", "adam"]


def headline_line(protocol: str, label: str, item: dict, reference: str, group="all") -> str:
    """One headline sentence: protocol, optimizer, track, reference and the aggregates."""
    agg = item["groups"][group][reference]
    trials = sorted(set(item["num_trials"]))
    seeds = "/".join(map(str, agg["num_seeds"]))
    what = PROTOCOL_WORDS[protocol][2]
    text = (f"[{PROTOCOL_WORDS[protocol][0]}] {label} ({TRACK_WORDS[item['track']]}, "
            f"{'/'.join(map(str, trials))} trials) vs "
            f"{REFERENCE_WORDS.get(reference, reference)} on {agg['num_tasks']}"
            f"{' ' + _KIND_WORDS.get(group, group) if group != 'all' else ''} task(s) x {seeds} "
            f"seeds: lower {what} on "
            f"{agg['tasks_won']}/{agg['num_tasks']}; speedup median {_ci(agg['speedup'], 'median')}"
            f", IQM {_ci(agg['speedup'], 'iqm')}; normalised {what} median "
            f"{_ci(agg['normalized_loss'], 'median')}, IQM {_ci(agg['normalized_loss'], 'iqm')}; "
            f"reached the target on {agg['reached_target']}; diverged on {agg['diverged_tasks']}")
    if agg["single_seed"]:
        text += " [ONE SEED: not a headline]"
    return text


def headline_text(results) -> str:
    """Per protocol, one line per learned optimizer and reference (every non-reference optimizer
    when no learned optimizer ran), over all tasks."""
    lines = []
    references = set(results["references"].values())
    for protocol, per_label in results["summary"]["by_protocol"].items():
        learned = [lbl for lbl, item in per_label.items() if item["kind"] == "learned"]
        for label in learned or [lbl for lbl in per_label if lbl not in references]:
            item = per_label[label]
            for reference in _references_for(item):
                if reference in item["groups"]["all"]:
                    lines.append(headline_line(protocol, label, item, reference))
    return "\n".join(lines) if lines else "no optimizer besides the references ran"


def _aggregate_table(protocol: str, per_label: dict) -> list[str]:
    what = PROTOCOL_WORDS[protocol][2]
    header = ["optimizer", "track (trials)", "group", "vs", f"tasks with lower {what}",
              "speedup median [95% CI]", "speedup IQM [95% CI]", f"normalised {what} median",
              f"normalised {what} IQM", "reached target", "diverged tasks"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, item in per_label.items():
        trials = "/".join(map(str, sorted(set(item["num_trials"]))))
        for group, by_ref in item["groups"].items():
            for ref in _references_for(item):
                if ref not in by_ref:
                    continue
                agg = by_ref[ref]
                lines.append("| " + " | ".join([
                    label, f"{TRACK_WORDS[item['track']]} ({trials})",
                    _KIND_WORDS.get(group, group) or "all",
                    REFERENCE_WORDS.get(ref, ref), f"{agg['tasks_won']}/{agg['num_tasks']}",
                    _ci(agg["speedup"], "median"), _ci(agg["speedup"], "iqm"),
                    _ci(agg["normalized_loss"], "median"), _ci(agg["normalized_loss"], "iqm"),
                    str(agg["reached_target"]), str(agg["diverged_tasks"])]) + " |")
    return lines


def _speedup_cell(vs) -> str:
    if vs is None:
        return "n/a"
    s = vs["speedup"]
    if s["speedup"] is None:
        return "not reached"
    seeds = [v for v in s["per_seed"] if v is not None]
    spread = f" (seeds {min(seeds):.2g}–{max(seeds):.2g})" if seeds else ""
    return f"{s['speedup']:.2f}x{spread}"


def _task_table(record, protocol: str) -> list[str]:
    generalization = protocol == "generalization"
    has_accuracy = any("test_accuracy" in e["runs"][protocol]["final"]
                       for e in record["optimizers"].values())
    header = ["optimizer", "track", "hyperparameters", f"score ({PROTOCOL_WORDS[protocol][2]})",
              "final train loss", "final valid loss", "final test loss"]
    header += ["final test accuracy"] if has_accuracy else []
    if generalization:
        header += ["test loss at best valid"] + (["test accuracy at best valid"]
                                                 if has_accuracy else [])
    header += ["speedup vs tuned Adam", "speedup vs Adam(1e-3)", "diverged seeds", "ms/step"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, entry in record["optimizers"].items():
        run = entry["runs"][protocol]
        hparams = run["hparams"]
        hp_text = ", ".join(f"{k}={v:.3g}" for k, v in hparams.items()) if hparams else "default"
        final = run["final"]
        row = [label, TRACK_WORDS[entry["track"]], hp_text, _mean_std(run["score"]),
               _mean_std(final["train_loss"]), _mean_std(final["valid_loss"]),
               _mean_std(final["test_loss"])]
        row += [_mean_std(final.get("test_accuracy"))] if has_accuracy else []
        if generalization:
            best = run["at_best_valid"]
            row += [_mean_std(best["test_loss"])]
            row += [_mean_std(best.get("test_accuracy"))] if has_accuracy else []
        row += [_speedup_cell(run["vs"].get("adam")), _speedup_cell(run["vs"].get("adam@1e-3")),
                f"{sum(run['diverged'])}/{len(run['diverged'])}",
                f"{1e3 * entry['time_per_step_s']:.3g}"]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def calibration_section(results) -> list[str]:
    """"Calibration and slices": per protocol, each optimizer's test calibration (first final
    seed, tasks with predictions) before / after temperature scaling, then each task's
    reliability diagrams. Empty without an offline evaluation."""
    table = results["summary"].get("calibration")
    if not table:
        return []
    out = ["", "## Calibration and slices", "",
           f"Models at the end of training, first final seed ({results['settings']['seeds'][0]}),"
           " on the classification tasks. ECE: top-label, 15 equal-width bins, on test; the "
           "temperature is fitted on valid only. Medians over tasks; worst class = the lowest "
           "per-class test accuracy. Every metric with its bootstrap interval, the slice "
           "finder's high-error slices and the baselines: [evaluation.md](evaluation/"
           "evaluation.md)."]
    for protocol, per_label in table.items():
        out += ["", f"### Calibration [{protocol} protocol]", "",
                "| optimizer | tasks | ECE before | ECE after | temperature | worst class acc "
                "| test macro F1 |", "|---|---|---|---|---|---|---|"]
        for label, row in per_label.items():
            out.append(f"| {label} | {row['num_tasks']} | {_fmt(row['ece_before'])} | "
                       f"{_fmt(row['ece_after'])} | {_fmt(row['temperature'])} | "
                       f"{_fmt(row['worst_class_accuracy'])} | {_fmt(row['test_f1_macro'])} |")
    protocol = results["protocols"][0]
    for record in results["tasks"]:
        diagrams = [(label, entry["runs"][protocol].get("evaluation"))
                    for label, entry in record["optimizers"].items()
                    if entry["kind"] == "learned" or label == results["references"]["tuned"]]
        diagrams = [(label, e) for label, e in diagrams if e]
        if diagrams:
            out += ["", f"Reliability diagrams, {record['label']} [{protocol} protocol]: "
                    + " ".join(f"![{label}]({e['reliability_diagram']})"
                               for label, e in diagrams)]
    return out


def render_markdown(results) -> str:
    """The report's markdown text."""
    s = results["settings"]
    tuning = s["tuning"]
    wall = results["wall_time_s"]
    out = [
        "# Benchmark: learned optimizers against tuned and tuning-free baselines", "",
        f"Command: `{results['command']}`  ", f"Device: {results['device']}  ",
        f"Protocols: {', '.join(results['protocols'])} (never mixed: each protocol picks its "
        "own winners from one set of tuning trials).  ",
        f"Budget: {s['num_steps']} steps per run, evaluation every {s['eval_every']} steps; "
        f"final seeds {s['seeds']}.  ",
        f"Tuning: {tuning['sampler']} search, seeds {tuning['seeds']}, {tuning['grid_points']} "
        f"learning rates per tuned optimizer (AdamW x {tuning['weight_decay_points']} weight "
        f"decays); learned optimizers with a learning rate: grid relative to their default "
        f"(mode {s['learned_tuning']!r}, learned schedule "
        f"{s.get('learned_schedule', 'constant')!r}: 'same' = the baselines'); tuned baselines "
        f"use the {s['schedule']!r} schedule. "
        "The test split is read only by the final runs reported here.  ",
        f"Wall time: {wall['total']:.0f} s in all: {wall['compile']:.0f} s compiling, "
        f"{wall['tuning']:.0f} s of tuning trials.", "",
        "## Headline", "", headline_text(results).replace("\n", "  \n"), "",
        "## Meta-training distribution", ""]
    learned = list(results["tasks"][0]["distribution"]) if results["tasks"] else []
    if learned:
        out += ["| task | origin | family | " + " | ".join(learned) + " |",
                "|" + "---|" * (3 + len(learned))]
        for r in results["tasks"]:
            out.append(f"| {r['label']} | {r['origin']} | {r['family'] or '-'} | "
                       + " | ".join(r["distribution"][lbl] for lbl in learned) + " |")
    else:
        out.append("No learned optimizers were benchmarked.")
    for protocol, per_label in results["summary"]["by_protocol"].items():
        name, meaning, _ = PROTOCOL_WORDS[protocol]
        out += ["", f"## {name.capitalize()}: aggregates", "", f"{meaning}.", "",
                *_aggregate_table(protocol, per_label), ""]
        out += [f"![{name}, {track} track: performance profile]"
                f"(profile_{protocol}_{track}.png)"
                for track in results["summary"]["profiles"][protocol]]
    for r in results["tasks"]:
        dataset = (r["dataset"] or {}).get("name", "n/a")
        out += ["", f"## {r['label']}", "",
                f"Origin {r['origin']}, family {r['family'] or '-'}, {r['num_params']} parameters, "
                f"dataset {dataset}; test-split random-guess accuracy "
                f"{_fmt(r['random_guess_accuracy'])}, zero-rule accuracy "
                f"{_fmt(r['zero_rule_accuracy'])}."]
        for protocol in results["protocols"]:
            out += ["", f"### {r['label']}: {PROTOCOL_WORDS[protocol][0]}", "",
                    *_task_table(r, protocol)]
            edges = [f"{lbl} ({', '.join(e['tuning']['at_edge'][protocol])})"
                     for lbl, e in r["optimizers"].items()
                     if e.get("tuning") and e["tuning"]["at_edge"].get(protocol)]
            if edges:
                out += ["", f"Warning ({PROTOCOL_WORDS[protocol][0]}): best value on the edge of "
                        f"the search range for {'; '.join(edges)} -- the range may be too narrow."]
        out += ["", f"![curves](curves_{safe_name(r['label'])}.png)"]
    out += calibration_section(results)
    out += ["", "## Definitions", "",
            "Optimization protocol: speedup = the reference's steps to its own final training "
            f"loss (seed-mean, smoothed over {s['smoothing_window']} steps) / this optimizer's "
            "steps to that loss. Generalization protocol: speedup = the reference's steps to its "
            "best validation loss / this optimizer's steps (evaluation resolution). 'not "
            "reached' = never within the budget (counted as speedup 0 in aggregates). "
            "Normalised loss = (score - reference's score) / (reference's initial - reference's "
            "score), per seed (0 = the reference, 1 = initialisation, < 0 = better); a diverged "
            "seed counts as +inf. Median / IQM (mean of the middle 50%) with 95% percentile "
            "bootstrap intervals over tasks x seeds (scipy.stats.bootstrap). Diverged: a "
            "non-finite loss, or a final smoothed training loss above the initial one. The "
            "performance profile shows, per tau, the fraction of tasks on which an optimizer's "
            "seed-mean score is within a factor tau of the best of its track. Schedule-free "
            "AdamW is evaluated at its averaged iterate (its training-loss curve is at the "
            "gradient point)."]
    return "\n".join(out) + "\n"


def _band(ax, x, values, label):
    values = np.asarray([[np.nan if v is None else v for v in row] for row in values], float)
    mean = np.nanmean(values, axis=0) if np.isfinite(values).any() else values[0]
    line, = ax.plot(x, mean, label=label)
    ax.fill_between(x, np.nanmin(values, axis=0), np.nanmax(values, axis=0),
                    color=line.get_color(), alpha=0.2)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_task_curves(record, protocols, path) -> None:
    """Optimization protocol: smoothed train loss; generalization: valid loss; mean with a
    min-max band over seeds, one panel per protocol."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(protocols), figsize=(5.5 * len(protocols), 4), squeeze=False)
    for ax, protocol in zip(axes[0], protocols, strict=True):
        for label, entry in record["optimizers"].items():
            c = entry["runs"][protocol]["curves"]
            if protocol == "optimization":
                _band(ax, c["train_loss_steps"], c["train_loss_smoothed"], label)
            else:
                _band(ax, c["eval_steps"], c["valid"]["loss"], label)
        what = "train loss (smoothed)" if protocol == "optimization" else "valid loss"
        ax.set_title(f"{record['label']}, {PROTOCOL_WORDS[protocol][0]}: {what}", fontsize=9)
        ax.set_xlabel("step")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_profile(table: dict, protocol: str, track: str, path) -> None:
    """The performance profile of one protocol and track."""
    plt = _pyplot()
    rho = summary_lib.profile_curve(table, PROFILE_TAUS)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for label, curve in zip(table["labels"], rho, strict=True):
        ax.step(PROFILE_TAUS, curve, where="post", label=label)
    ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(f"tau (score within tau x the best; score = {PROTOCOL_WORDS[protocol][2]})")
    ax.set_ylabel(f"fraction of {len(table['tasks'])} tasks")
    ax.set_title(f"{PROTOCOL_WORDS[protocol][0]}, {TRACK_WORDS[track]} track", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(results, workdir) -> list[Path]:
    """report.md, curves_<task>.png and profile_<protocol>_<track>.png in `workdir`."""
    workdir = Path(workdir)
    paths = []
    for record in results["tasks"]:
        path = workdir / f"curves_{safe_name(record['label'])}.png"
        plot_task_curves(record, results["protocols"], path)
        paths.append(path)
    for protocol, tables in results["summary"]["profiles"].items():
        for track, table in tables.items():
            if table["tasks"]:
                path = workdir / f"profile_{protocol}_{track}.png"
                plot_profile(table, protocol, track, path)
                paths.append(path)
    (workdir / "report.md").write_text(render_markdown(results))
    return [workdir / "report.md", *paths]
