"""report.md and PNG plots from a benchmark's results.json (schema in experiments.benchmark).

    paths = write_report(json.load(open("workdirs/benchmark/results.json")), "workdirs/benchmark")
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np


def _fmt(value, digits=4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _mean_std(summary) -> str:
    if summary is None or summary.get("mean") is None:
        return "diverged" if summary else "n/a"
    text = f"{summary['mean']:.4g} ± {summary['std']:.2g}"
    if summary["n_finite"] < summary["n"]:
        text += f" ({summary['n'] - summary['n_finite']} non-finite)"
    return text


def _speedup_text(entry) -> tuple[str, str]:
    speedup = entry.get("speedup")
    if not speedup:
        return "n/a", "n/a"
    if speedup["speedup"] is None:
        return "not reached", "< target"
    per_seed = [s for s in speedup["per_seed"] if s is not None]
    spread = f" (seeds {min(per_seed):.2g}–{max(per_seed):.2g})" if per_seed else ""
    return str(speedup["steps"]), f"{speedup['speedup']:.2f}x{spread}"


def safe_name(label: str) -> str:
    """A label as a file-name fragment."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label)


_KIND_WORDS = {"heldout_in_family": "held-out in-family",
               "out_of_distribution": "out-of-distribution",
               "named_in_family": "named in-family", "not_meta_trained": "(not meta-trained)"}


def headline_text(results) -> str:
    """A few lines per learned optimizer: wins, reached targets, divergences, grouped by where
    the tasks lie relative to that optimizer's meta-training distribution."""
    lines = []
    for label, by_kind in results["summary"].items():
        for kind, c in by_kind.items():
            lines.append(f"{label} on {c['num_tasks']} {_KIND_WORDS.get(kind, kind)} task(s): "
                         f"speedup >= 2x on {c['speedup_ge_2']} (median "
                         f"{c['median_speedup']:.3g}x), reached tuned Adam's final train loss on "
                         f"{c['reached_adam_target']}, train loss within 10% of Adam on "
                         f"{c['within_10pct_of_adam']}, test loss within 10% of Adam on "
                         f"{c['test_within_10pct_of_adam']}, diverged on {c['diverged']}")
    return "\n".join(lines) if lines else "no learned optimizers in this benchmark"


def _task_table(record) -> list[str]:
    has_accuracy = any("test_accuracy" in e["final"] for e in record["optimizers"].values())
    header = ["optimizer", "hyperparameters", "train loss", "valid loss", "test loss"]
    header += ["test accuracy"] if has_accuracy else []
    header += ["steps to Adam target", "speedup", "diverged seeds", "ms/step", "state bytes/param"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, entry in record["optimizers"].items():
        hparams = entry.get("hparams")
        hp_text = (", ".join(f"{k}={v:.3g}" for k, v in hparams.items()) if hparams
                   else entry["description"])
        steps, speedup = _speedup_text(entry)
        row = [label, hp_text, _mean_std(entry["final"]["train_loss"]),
               _mean_std(entry["final"]["valid_loss"]), _mean_std(entry["final"]["test_loss"])]
        row += [_mean_std(entry["final"].get("test_accuracy"))] if has_accuracy else []
        row += [steps, speedup, f"{sum(entry['diverged'])}/{len(entry['diverged'])}",
                f"{1e3 * entry['time_per_step_s']:.3g}", f"{entry['state_bytes_per_param']:.3g}"]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def render_markdown(results) -> str:
    """The report's markdown text."""
    s = results["settings"]
    tuning = s["tuning"]
    wall = results["wall_time_s"]
    out = [
        "# Benchmark: learned optimizers against per-task-tuned baselines", "",
        f"Command: `{results['command']}`  ", f"Device: {results['device']}  ",
        f"Budget: {s['num_steps']} steps per run, evaluation every {s['eval_every']} steps on "
        f"{s['eval_batches']} batch(es) per split; final seeds {s['seeds']}.  ",
        f"Tuning: {tuning['sampler']} search on the **validation** split, seeds "
        f"{tuning['seeds']}, objective = mean of the last {tuning['last_k']} valid losses "
        "(diverged = worst); the test split is read only by the final runs reported here.  ",
        f"Wall time: {wall['total']:.0f} s in all: {wall['compile']:.0f} s compiling, "
        f"{wall['tuning']:.0f} s of tuning trials.", "",
        "## Headline", "", headline_text(results).replace("\n", "  \n"), "",
        "## Meta-training distribution", "",
    ]
    learned = s["learned"] and list(results["summary"])
    if learned:
        out += ["| task | origin | family | " + " | ".join(learned) + " |",
                "|" + "---|" * (3 + len(learned))]
        for r in results["tasks"]:
            out.append(f"| {r['label']} | {r['origin']} | {r['family'] or '-'} | "
                       + " | ".join(r["distribution"][lbl] for lbl in learned) + " |")
    else:
        out.append("No learned optimizers were benchmarked.")
    for r in results["tasks"]:
        dataset = (r["dataset"] or {}).get("name", "n/a")
        out += ["", f"## {r['label']}", "",
                f"Origin {r['origin']}, family {r['family'] or '-'}, {r['num_params']} parameters, "
                f"dataset {dataset}; test-split random-guess accuracy "
                f"{_fmt(r['random_guess_accuracy'])}, zero-rule accuracy "
                f"{_fmt(r['zero_rule_accuracy'])}.", "", *_task_table(r), "",
                f"![curves](curves_{safe_name(r['label'])}.png)"]
        edges = [f"{lbl} ({', '.join(e['tuning']['at_edge'])})"
                 for lbl, e in r["optimizers"].items()
                 if e.get("tuning") and e["tuning"]["at_edge"]]
        if edges:
            out += ["", "Warning: best value on the edge of the search range for "
                        f"{'; '.join(edges)} -- the range may be too narrow."]
    out += ["", "![speedup](speedup.png)", "", "## Definitions", "",
            "Final losses are at the last step, mean ± std over the final seeds (non-finite seeds "
            "counted, not averaged). Steps to Adam target: first step at which the seed-mean "
            f"training loss, smoothed over {s['smoothing_window']} steps, is at or below tuned "
            "Adam's final smoothed training loss; speedup = Adam's steps / these steps (VeLO's "
            "definition); 'not reached' means never within the budget (speedup undefined, below "
            "Adam's steps / budget). Diverged: a non-finite loss, or a final smoothed training "
            "loss above the initial one. ms/step: wall time of the jitted run over all seeds "
            "(vmapped, validation evaluation included) / steps, compile excluded. Baselines are "
            "tuned for *validation* loss while speedup compares *training* loss, so a baseline "
            "tuned for generalization can reach Adam's training target faster or slower than "
            "its valid-loss rank suggests."]
    return "\n".join(out) + "\n"


def _band(ax, x, values, label):
    values = np.asarray([[np.nan if v is None else v for v in row] for row in values], float)
    mean = np.nanmean(values, axis=0) if np.isfinite(values).any() else values[0]
    line, = ax.plot(x, mean, label=label)
    ax.fill_between(x, np.nanmin(values, axis=0), np.nanmax(values, axis=0),
                    color=line.get_color(), alpha=0.2)


def plot_task_curves(record, path) -> None:
    """Train (smoothed, every step) and valid loss curves, mean with a min-max band over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_train, ax_valid) = plt.subplots(1, 2, figsize=(11, 4))
    for label, entry in record["optimizers"].items():
        c = entry["curves"]
        _band(ax_train, c["train_loss_steps"], c["train_loss_smoothed"], label)
        _band(ax_valid, c["eval_steps"], c["valid"]["loss"], label)
    for ax, title in ((ax_train, "train loss (smoothed)"), (ax_valid, "valid loss")):
        ax.set_xlabel("step")
        ax.set_title(f"{record['label']}: {title}")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    ax_valid.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_speedups(results, path) -> None:
    """Speedup over tuned Adam per task and optimizer (0 = never reached Adam's target)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [r["label"] for r in results["tasks"]]
    labels = [lbl for lbl in results["tasks"][0]["optimizers"] if lbl != "adam"]
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(tasks)), 4))
    width = 0.8 / max(len(labels), 1)
    for index, label in enumerate(labels):
        values = [((r["optimizers"].get(label) or {}).get("speedup") or {}).get("speedup") or 0.0
                  for r in results["tasks"]]
        ax.bar(np.arange(len(tasks)) + index * width, values, width, label=label)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.axhline(2.0, color="k", lw=0.8, ls="--")
    ax.set_xticks(np.arange(len(tasks)) + 0.4 - width / 2, tasks, rotation=20, fontsize=8)
    ax.set_ylabel("speedup over tuned Adam (0 = not reached)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(results, workdir) -> list[Path]:
    """report.md, curves_<task>.png per task and speedup.png in `workdir`; returns their paths."""
    workdir = Path(workdir)
    paths = []
    for record in results["tasks"]:
        path = workdir / f"curves_{safe_name(record['label'])}.png"
        plot_task_curves(record, path)
        paths.append(path)
    plot_speedups(results, workdir / "speedup.png")
    (workdir / "report.md").write_text(render_markdown(results))
    return [workdir / "report.md", *paths, workdir / "speedup.png"]
