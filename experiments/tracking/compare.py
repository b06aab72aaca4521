"""Turn tracked runs into a markdown report with loss curves, comparing runs side by side.

    report_path = build_report(["workdirs/adam_s0", "workdirs/sweep"], out="workdirs/report")

(command: `python -m experiments.report --workdir DIR [--workdir DIR2 ...]`).

A run is any folder holding `metrics.jsonl` (see `experiments.tracking`). Runs that share a
name and differ in seed form one group: its curves are drawn as the mean over seeds with a
min-max band, and its table row gives mean +- std over seeds. The name comes from `group_by`
(a dotted key of config.json / params.json), else the first of `name`, `run_name`,
`optimizer.name`, `optimizer` found there, else the folder name without a `_seed3`-style
suffix. Outputs in `out`: `report.md`, one `<metric>.png` per plotted metric and
`report_summary.json` (the numbers in the tables).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from experiments.measure.tables import markdown_table
from experiments.tracking.values import flatten_params, read_metrics

NAME_KEYS = ("name", "run_name", "optimizer.name", "optimizer")
SEED_KEYS = ("seed", "train.seed", "task.seed")
_SEED_SUFFIX = re.compile(r"[_-](?:seed|s)(\d+)$")
_NOT_CURVES = {"step", "time"}


@dataclasses.dataclass
class Run:
    """One run folder, read back."""

    path: Path
    settings: dict[str, Any]  # flattened config.json + params.json ("a.b" keys)
    env: dict[str, Any]
    status: str
    rows: list[dict[str, Any]]
    name: str = ""
    seed: Any = None

    def curve(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        points = [(r["step"], r[key]) for r in self.rows if isinstance(r.get(key), int | float)]
        steps, values = zip(*points, strict=True) if points else ((), ())
        return np.asarray(steps, dtype=np.int64), np.asarray(values, dtype=np.float64)


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def find_runs(workdirs: Sequence[str | Path]) -> list[Path]:
    """Run folders: each workdir that has metrics.jsonl, else every such folder below it."""
    found: list[Path] = []
    for workdir in workdirs:
        workdir = Path(workdir)
        if not workdir.is_dir():
            raise FileNotFoundError(f"workdir {str(workdir)!r} is not a directory")
        if (workdir / "metrics.jsonl").exists():
            found.append(workdir)
        else:
            found += sorted(p.parent for p in workdir.rglob("metrics.jsonl"))
    if not found:
        raise FileNotFoundError(f"no metrics.jsonl in or below {[str(w) for w in workdirs]}")
    return list(dict.fromkeys(p.resolve() for p in found))


def load_run(path: Path, group_by: str | None = None) -> Run:
    settings = flatten_params(_read_json(path / "config.json"))
    settings.update(flatten_params(_read_json(path / "params.json")))
    run = Run(path=path, settings=settings, env=_read_json(path / "env.json"),
              status=_read_json(path / "run.json").get("status", "unknown"),
              rows=read_metrics(path))
    keys = (group_by,) if group_by else NAME_KEYS
    name = next((settings[k] for k in keys if isinstance(settings.get(k), str | int | float)),
                None)
    if group_by and name is None:
        raise KeyError(f"run {path} has no setting {group_by!r}; it has {sorted(settings)[:30]}")
    match = _SEED_SUFFIX.search(path.name)
    run.name = str(name) if name is not None else _SEED_SUFFIX.sub("", path.name)
    run.seed = next((settings[k] for k in SEED_KEYS if k in settings),
                    int(match.group(1)) if match else None)
    return run


def curve_keys(runs: Sequence[Run]) -> list[str]:
    keys: dict[str, None] = {}
    for run in runs:
        for row in run.rows:
            keys.update({k: None for k, v in row.items()
                         if k not in _NOT_CURVES and isinstance(v, int | float)})
    return list(keys)


def default_plot_keys(keys: Sequence[str], limit: int = 12) -> list[str]:
    """Losses and accuracies (not per-tensor breakdowns), at most `limit`."""
    chosen = [k for k in keys if re.search(r"loss|accuracy", k) and k.count("/") <= 1]
    return chosen[:limit]


def group_curves(runs: Sequence[Run], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values[num_runs, num_steps]) on the steps every run logged."""
    curves = [run.curve(key) for run in runs]
    common = sorted(set.intersection(*(set(s.tolist()) for s, _ in curves)))
    steps = np.asarray(common, dtype=np.int64)
    values = np.stack([v[np.searchsorted(s, steps)] for s, v in curves]) if common else None
    return steps, values


def lower_is_better(key: str) -> bool:
    return not re.search(r"accuracy|acc\b|steps_per_s|examples_per_s|tokens_per_s", key)


def summarize(groups: Mapping[str, list[Run]], keys: Sequence[str]) -> dict[str, Any]:
    """Per group and metric: final and best values (mean, std over seeds) and divergences."""
    summary: dict[str, Any] = {}
    for name, runs in groups.items():
        entry: dict[str, Any] = {"runs": [str(r.path) for r in runs],
                                 "seeds": [r.seed for r in runs], "metrics": {}}
        for key in keys:
            finals, bests, diverged = [], [], 0
            for run in runs:
                _, values = run.curve(key)
                if not len(values):
                    continue
                finals.append(values[-1])
                finite = values[np.isfinite(values)]
                diverged += int(not np.all(np.isfinite(values)))
                if len(finite):
                    bests.append(finite.min() if lower_is_better(key) else finite.max())
            if finals:
                entry["metrics"][key] = {
                    "final_mean": float(np.mean(finals)), "final_std": float(np.std(finals)),
                    "best_mean": float(np.mean(bests)) if bests else math.nan,
                    "num_runs": len(finals), "num_diverged": diverged,
                }
        summary[name] = entry
    return summary


def plot_metric(groups: Mapping[str, list[Run]], key: str, path: Path) -> bool:
    """One PNG: per group the mean curve over seeds and a min-max band. False if no data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.2), dpi=110)
    drawn, all_values = False, []
    for index, (name, runs) in enumerate(groups.items()):
        runs = [r for r in runs if len(r.curve(key)[0])]
        if not runs:
            continue
        color = f"C{index % 10}"
        steps, values = group_curves(runs, key)
        if values is None or len(steps) < 2:  # seeds logged different steps: draw each run
            for run in runs:
                axes.plot(*run.curve(key), color=color, alpha=0.8,
                          label=f"{name} (seed {run.seed})")
                all_values.append(run.curve(key)[1])
        else:
            with warnings.catch_warnings():  # all-NaN columns (every seed diverged) stay NaN
                warnings.simplefilter("ignore", RuntimeWarning)
                mean = np.nanmean(np.where(np.isfinite(values), values, np.nan), axis=0)
            diverged = int(np.sum(~np.all(np.isfinite(values), axis=1)))
            label = f"{name} ({len(runs)} seed{'s' if len(runs) > 1 else ''}"
            label += f", {diverged} diverged)" if diverged else ")"
            axes.plot(steps, mean, color=color, label=label)
            finite_mean = np.isfinite(mean)
            if diverged and finite_mean.any():  # mark where the curve stops being finite
                last = np.flatnonzero(finite_mean)[-1]
                axes.plot(steps[last], mean[last], marker="x", markersize=10, color=color)
            if len(runs) > 1:
                axes.fill_between(steps, np.nanmin(values, 0), np.nanmax(values, 0),
                                  color=color, alpha=0.2, linewidth=0)
            all_values.append(values.ravel())
        drawn = True
    if drawn:
        finite = np.concatenate(all_values)
        finite = finite[np.isfinite(finite)]
        if len(finite) and finite.min() > 0 and finite.max() / finite.min() > 20:
            axes.set_yscale("log")
        axes.set_xlabel("step")
        axes.set_ylabel(key)
        axes.set_title(f"{key}: mean over seeds, band = min-max")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
        figure.tight_layout()
        figure.savefig(path)
    plt.close(figure)
    return drawn


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def _last(run: Run, key: str) -> Any:
    values = run.curve(key)[1]
    return float(values[-1]) if len(values) else "-"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    return [markdown_table(header, rows, fmt=_fmt)]


def differing_settings(runs: Sequence[Run], limit: int = 25) -> list[str]:
    keys = sorted({k for run in runs for k in run.settings})
    differ = [k for k in keys if len({json.dumps(run.settings.get(k), sort_keys=True)
                                      for run in runs}) > 1]
    return differ[:limit]


def render_markdown(runs: Sequence[Run], groups: Mapping[str, list[Run]],
                    summary: Mapping[str, Any], table_keys: Sequence[str],
                    plots: Sequence[str]) -> str:
    lines = ["# Run report", "",
             f"{len(runs)} run(s) in {len(groups)} group(s). Curves: mean over seeds, band = "
             "min-max over seeds. Table: final logged value, mean +- std over seeds; "
             "'best' is the min (max for accuracies/throughput) over the run, averaged over "
             "seeds; 'diverged' counts runs with a non-finite value.", ""]
    lines += ["## Groups", ""]
    first = table_keys[0] if table_keys else "-"
    header = (["group", "seeds"] + [f"{k} final" for k in table_keys]
              + [f"{first} best", f"{first} diverged"])
    rows = []
    for name, entry in summary.items():
        cells: list[Any] = [name, ", ".join(str(s) for s in entry["seeds"])]
        main = None
        for key in table_keys:
            stats = entry["metrics"].get(key)
            cells.append(f"{_fmt(stats['final_mean'])} +- {_fmt(stats['final_std'])}"
                         if stats else "-")
            main = main or stats
        cells += [_fmt(main["best_mean"]) if main else "-",
                  f"{main['num_diverged']}/{main['num_runs']}" if main else "-"]
        rows.append(cells)
    lines += _table(header, rows)
    lines += ["## Runs side by side", ""]
    speed_keys = ["speed/steps_per_s", "speed/first_step_s", "memory/host_peak_rss_mib"]
    header = ["run", "group", "seed", "status", "last step", *table_keys, *speed_keys, "commit"]
    rows = []
    for run in runs:
        git = run.env.get("git", {})
        commit = (git.get("commit") or "-")[:10] + (" (dirty)" if git.get("dirty") else "")
        steps_per_s = run.curve("speed/steps_per_s")[1]
        rows.append([run.path.name, run.name, run.seed, run.status,
                     run.rows[-1]["step"] if run.rows else "-",
                     *[_last(run, k) for k in table_keys],
                     float(np.median(steps_per_s)) if len(steps_per_s) else "-",
                     *[_last(run, k) for k in speed_keys[1:]], commit])
    lines += _table(header, rows)
    differ = differing_settings(runs)
    if differ:
        lines += ["## Settings that differ between runs", ""]
        lines += _table(["run", *differ],
                        [[run.path.name, *[json.dumps(run.settings.get(k)) for k in differ]]
                         for run in runs])
    if plots:
        lines += ["## Curves", ""] + [f"![{p}]({p})" for p in plots] + [""]
    lines += ["## Sources", ""] + [f"- `{run.path}`" for run in runs] + [""]
    return "\n".join(lines)


def build_report(workdirs: Sequence[str | Path], out: str | Path | None = None, *,
                 group_by: str | None = None, metrics: Sequence[str] | None = None) -> Path:
    """Read the runs, write report.md, PNGs and report_summary.json into `out`; return report.md.

    Args:
      workdirs: run folders, or folders to search for runs.
      out: output folder (default: the single workdir, else their common parent).
      group_by: dotted setting naming the group of a run (default: see module docstring).
      metrics: curves to plot and tabulate (default: losses and accuracies).
    """
    runs = [load_run(path, group_by) for path in find_runs(workdirs)]
    out = Path(out or os.path.commonpath([Path(w).resolve() for w in workdirs]))
    out.mkdir(parents=True, exist_ok=True)
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.name, []).append(run)
    available = curve_keys(runs)
    if metrics:
        missing = [k for k in metrics if k not in available]
        if missing:
            raise ValueError(f"metrics {missing} were never logged; logged keys: {available}")
        keys = list(metrics)
    else:
        keys = default_plot_keys(available)
    plots = []
    for key in keys:
        filename = re.sub(r"[^\w.-]", "_", key) + ".png"
        if plot_metric(groups, key, out / filename):
            plots.append(filename)
    summary = summarize(groups, keys)
    (out / "report_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    report = out / "report.md"
    report.write_text(render_markdown(runs, groups, summary, keys[:4], plots))
    return report
