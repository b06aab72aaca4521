"""Sensitivity of a study: fANOVA hyperparameter importance and objective-vs-value plots.

    scores = param_importances(study_or_result_trials, space)   # {"learning_rate": 0.93, ...}
    plot_importances(scores, workdir / "importance.png")
    plot_objective_vs_params(result.trials, space, workdir / "objective_vs_params.png")

Importance is Optuna's fANOVA evaluator (a random forest fit to the complete trials, variance
decomposed per parameter; Hutter et al. 2014), fixed seed. It needs at least two complete
trials with distinct values and considers only parameters present in every complete trial.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import optuna

from experiments.automl.space import Categorical, Float, Int, SearchSpace
from experiments.automl.study import TrialRecord

MIN_TRIALS = 2


def _study_from_records(records: Sequence[TrialRecord], space: SearchSpace) -> optuna.Study:
    """An in-memory study holding the complete, finite trials (fANOVA's input)."""
    study = optuna.create_study(direction="minimize")
    distributions = _distributions(space)
    for record in records:
        if record.state != "COMPLETE" or record.value is None or not math.isfinite(record.value):
            continue
        study.add_trial(optuna.trial.create_trial(
            params=record.params, value=record.value,
            distributions={k: distributions[k] for k in record.params}))
    return study


def _distributions(space: SearchSpace) -> dict[str, optuna.distributions.BaseDistribution]:
    out = {}
    for name, param in space.params.items():
        if isinstance(param, Float):
            out[name] = optuna.distributions.FloatDistribution(param.low, param.high,
                                                               log=param.log)
        elif isinstance(param, Int):
            out[name] = optuna.distributions.IntDistribution(param.low, param.high,
                                                             log=param.log, step=param.step)
        else:
            out[name] = optuna.distributions.CategoricalDistribution(param.choices)
    return out


def param_importances(records: Sequence[TrialRecord], space: SearchSpace,
                      seed: int = 0) -> dict[str, float]:
    """fANOVA importance of each parameter (summing to 1), most important first; {} when fewer
    than MIN_TRIALS complete finite trials exist or all their values are equal."""
    study = _study_from_records(records, space)
    values = [t.value for t in study.trials]
    if len(values) < MIN_TRIALS or len(set(values)) < 2:
        return {}
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed)
    scores = optuna.importance.get_param_importances(study, evaluator=evaluator)
    return {name: float(score) for name, score in scores.items()}


def plot_importances(scores: Mapping[str, float], path: str | Path, title: str = "") -> Path:
    """Horizontal bar chart of fANOVA importances as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(scores)[::-1]
    fig, ax = plt.subplots(figsize=(5, 0.4 * len(names) + 1.2))
    ax.barh(names, [scores[n] for n in names], color="tab:blue")
    ax.set_xlabel("fANOVA importance")
    ax.set_title(title or "hyperparameter importance")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_objective_vs_params(records: Sequence[TrialRecord], space: SearchSpace,
                             path: str | Path, objective_name: str = "objective") -> Path:
    """One scatter panel per parameter: each complete trial's objective against its value
    (log axes for log-scale parameters; non-finite objectives drawn at the top, in red)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = space.names
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    done = [r for r in records if r.state == "COMPLETE" and r.value is not None]
    finite = [r.value for r in done if math.isfinite(r.value)]
    ceiling = max(finite) if finite else 1.0
    for ax, name in zip(axes.flat, names, strict=False):
        param = space.params[name]
        points = [(r.params[name], r.value) for r in done if name in r.params]
        xs = [p[0] for p in points]
        ys = np.asarray([p[1] for p in points], dtype=float)
        bad = ~np.isfinite(ys)
        if isinstance(param, Categorical):
            ticks = {c: i for i, c in enumerate(param.choices)}
            xs = [ticks[x] for x in xs]
            ax.set_xticks(range(len(param.choices)), [str(c) for c in param.choices])
        xs = np.asarray(xs, dtype=float)
        ax.scatter(xs[~bad], ys[~bad], s=14, alpha=0.7)
        if bad.any():
            ax.scatter(xs[bad], np.full(bad.sum(), ceiling), s=14, color="red", marker="x",
                       label="non-finite")
            ax.legend(fontsize=7)
        if getattr(param, "log", False):
            ax.set_xscale("log")
        ax.set_xlabel(name)
        ax.set_ylabel(objective_name)
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
