"""Evaluate a finished run's predictions: `evaluation.json`, `evaluation.md` and PNGs.

    settings = EvaluationSettings(n_resamples=1000, seed=0)
    results = evaluate_run("workdirs/benchmark_quick", settings)   # reads RUN/predictions/*.npz

Splits: every metric, slice and check is reported on `test`; `valid` gets the metrics too and
is the only split the temperature is fitted on. A run directory without predictions is a
ValueError and nothing is written.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from pathlib import Path

import numpy as np

from experiments import tracking
from experiments.evaluation import baselines, calibration, slices, uncertainty
from experiments.evaluation import metrics as metrics_lib
from experiments.evaluation.predictions import Predictions, load_run_predictions


@dataclasses.dataclass(frozen=True)
class EvaluationSettings:
    """Knobs of `evaluate_run` (the command's config holds the same names)."""

    seed: int = 0
    confidence_level: float = 0.95
    n_resamples: int = 1000
    bootstrap_method: str = "percentile"
    num_bins: int = 15
    slice_max_depth: int = 3
    slice_min_size: int = 20
    slice_alpha: float = 0.05
    slice_top_k: int = 5
    slice_holdout_fraction: float = 0.5
    heuristic_task: str = ""  # a models task name: fit a sklearn baseline on its raw inputs
    heuristic_kind: str = "logistic"

    @property
    def bootstrap(self) -> dict:
        return {"confidence_level": self.confidence_level, "n_resamples": self.n_resamples,
                "method": self.bootstrap_method, "seed": self.seed}


def split_metrics(preds: Predictions, split: str, settings: EvaluationSettings) -> dict:
    """Metrics, intervals, calibration and selective prediction of one split."""
    part = preds.select(split)
    result = metrics_lib.classification_metrics(part.labels, part.probs)
    result["intervals"] = uncertainty.metrics_with_intervals(part.labels, part.probs,
                                                             **settings.bootstrap)
    if preds.task_kind == "language_model":
        result.update(metrics_lib.language_model_metrics(part.labels, part.probs))
    result["calibration"] = calibration.calibration_summary(
        part.labels, part.probs, num_bins=settings.num_bins, **settings.bootstrap)
    result["selective"] = calibration.selective_summary(part.labels, part.probs)
    return result


def baseline_metrics(preds: Predictions, split: str = "test") -> dict:
    """Random (uniform, label distribution) and zero-rule baselines on `split`.

    The label distribution and majority class come from `train_labels` when the file has them,
    else from the valid labels (named in "source")."""
    part = preds.select(split)
    if preds.train_labels is not None:
        source, reference = "train", preds.train_labels
    else:
        source, reference = "valid", preds.select("valid").labels
    num_classes = preds.num_classes
    return {"source": source, "split": split,
            "random_uniform": baselines.random_baseline(part.labels, "uniform",
                                                        num_classes=num_classes),
            "random_label_distribution": baselines.random_baseline(
                part.labels, "label_distribution", num_classes=num_classes,
                train_labels=reference),
            "zero_rule": baselines.zero_rule_baseline(reference, part.labels,
                                                      num_classes=num_classes)}


def _slice_families(part: Predictions) -> dict[str, dict[str, np.ndarray]]:
    """Partitions of the examples: by true class, and by each slice feature."""
    families = {"class": slices.class_slices(part.labels, part.num_classes)}
    if part.slice_features is not None:
        for column, name in enumerate(part.slice_feature_names):
            families[name] = slices.feature_slices(part.slice_features[:, [column]], [name])
    return {family: {k: m for k, m in masks.items() if m.any()}  # a class absent from test
            for family, masks in families.items()}


def slice_report(preds: Predictions, settings: EvaluationSettings, split: str = "test") -> dict:
    """Per-slice metrics of every family and the slice finder's top high-error slices."""
    part = preds.select(split)
    families = _slice_families(part)
    per_slice = {family: slices.slice_metrics(part.labels, part.probs, masks,
                                              seed=settings.seed,
                                              n_resamples=settings.n_resamples)
                 for family, masks in families.items()}
    one_hot = np.eye(part.num_classes)[part.labels]
    names = [f"label=={c}" for c in range(part.num_classes)]
    features = one_hot
    if part.slice_features is not None:
        features = np.concatenate([one_hot, part.slice_features], axis=1)
        names += list(part.slice_feature_names)
    errors = part.probs.argmax(axis=1) != part.labels
    finder = slices.find_error_slices(
        errors, features, names, max_depth=settings.slice_max_depth,
        min_size=settings.slice_min_size, alpha=settings.slice_alpha, top_k=settings.slice_top_k,
        holdout_fraction=settings.slice_holdout_fraction, seed=settings.seed)
    return {"split": split, "per_slice": per_slice, "high_error_slices": finder}


def paradox_report(all_preds: dict[str, Predictions], split: str = "test") -> list[dict]:
    """Simpson's paradox checks between every pair of models of the same task, per slicing
    (true class, each slice feature binned on both models' rows together).

    Each model is scored on its own rows, so models evaluated on different example sets (or
    subsets) are compared correctly. On identical examples a paradox is impossible (the pooled
    rates weight the slices equally for both), and the entry says so."""
    found = []
    for (name_a, a), (name_b, b) in itertools.combinations(all_preds.items(), 2):
        part_a, part_b = a.select(split), b.select(split)
        if part_a.num_classes != part_b.num_classes or a.task != b.task:
            continue  # only models of the same task are compared
        both = np.r_[part_a.labels, part_b.labels]
        families = {"class": slices.class_slices(both, part_a.num_classes)}
        names_a, names_b = part_a.slice_feature_names, part_b.slice_feature_names
        if part_a.slice_features is not None and names_a == names_b:
            features = np.concatenate([part_a.slice_features, part_b.slice_features])
            for column, name in enumerate(names_a):
                families[name] = slices.feature_slices(features[:, [column]], [name])
        rows_a = np.arange(len(both)) < len(part_a.labels)
        correct = np.r_[part_a.probs.argmax(1) == part_a.labels,
                        part_b.probs.argmax(1) == part_b.labels]
        same_examples = (np.array_equal(part_a.ids, part_b.ids)
                         and np.array_equal(part_a.labels, part_b.labels)
                         and (part_a.slice_features is None) == (part_b.slice_features is None)
                         and (part_a.slice_features is None
                              or np.array_equal(part_a.slice_features, part_b.slice_features)))
        for family, masks in families.items():
            table = {}
            for slice_name, mask in masks.items():
                in_a, in_b = mask & rows_a, mask & ~rows_a
                if in_a.any() and in_b.any():
                    table[slice_name] = {name_a: (int(correct[in_a].sum()), int(in_a.sum())),
                                         name_b: (int(correct[in_b].sum()), int(in_b.sum()))}
            if len(table) < 2:
                continue
            check = slices.simpsons_paradox(table)
            found.append({"models": [name_a, name_b], "slicing": family,
                          "same_examples": bool(same_examples), **check})
    return found


def heuristic_report(settings: EvaluationSettings) -> dict | None:
    if not settings.heuristic_task:
        return None
    import models

    task = models.get_task(settings.heuristic_task)
    train, test = task.full_split("train"), task.full_split("test")
    result = baselines.heuristic_baseline(np.asarray(train["x"]), np.asarray(train["y"]),
                                          np.asarray(test["x"]), np.asarray(test["y"]),
                                          kind=settings.heuristic_kind, seed=settings.seed)
    return {"task": settings.heuristic_task, "split": "test", **result}


def _behaviour(run_dir: Path, name: str) -> dict | None:
    path = run_dir / "predictions" / f"{name}.behaviour.json"
    return json.loads(path.read_text()) if path.exists() else None


def evaluate_predictions(preds: Predictions, settings: EvaluationSettings) -> dict:
    """Everything about one model: metrics by split, temperature scaling, baselines, slices."""
    valid, test = preds.select("valid"), preds.select("test")
    return {
        "task": preds.task, "task_kind": preds.task_kind, "num_classes": preds.num_classes,
        "splits": {split: split_metrics(preds, split, settings) for split in ("valid", "test")},
        "temperature_scaling": calibration.temperature_scaling(
            valid.labels, valid.probs, test.labels, test.probs, num_bins=settings.num_bins),
        "baselines": baseline_metrics(preds),
        "slices": slice_report(preds, settings),
    }


def _plots(all_preds: dict[str, Predictions], results: dict, out: Path) -> list[str]:
    written = []
    for name, model in results["models"].items():
        for strategy in calibration.BIN_STRATEGIES:
            bins = model["splits"]["test"]["calibration"][strategy]["bins"]
            path = out / f"reliability_{name}_test_{strategy}.png"
            calibration.plot_reliability_diagram(bins, path, title=f"{name}, test")
            written.append(path.name)
    curves = {name: calibration.accuracy_coverage_curve(p.select("test").labels,
                                                        p.select("test").probs)
              for name, p in all_preds.items()}
    path = calibration.plot_accuracy_coverage(curves, out / "accuracy_coverage_test.png",
                                              title="selective prediction (max prob), test")
    return [*written, path.name]


def evaluate_run(run_dir: str | Path, settings: EvaluationSettings | None = None) -> dict:
    """Evaluate every `RUN/predictions/<name>.npz`; write evaluation.json / .md / PNGs there."""
    from experiments.evaluation.markdown import render_markdown

    settings = settings or EvaluationSettings()
    run_dir = Path(run_dir)
    all_preds = load_run_predictions(run_dir)  # ValueError before anything is written
    results = {
        "settings": dataclasses.asdict(settings),
        "protocol": "metrics, slices and baselines on test; temperature fitted on valid only; "
                    f"{settings.confidence_level:.0%} percentile bootstrap intervals over "
                    f"examples ({settings.n_resamples} resamples, seed {settings.seed})",
        "models": {name: evaluate_predictions(p, settings) for name, p in all_preds.items()},
        "paradoxes": paradox_report(all_preds),
        "heuristic_baseline": heuristic_report(settings),
    }
    for name, model in results["models"].items():
        model["behaviour"] = _behaviour(run_dir, name)
    results["plots"] = _plots(all_preds, results, run_dir)
    tracking.write_json_atomic(run_dir / "evaluation.json", _jsonable(results))
    (run_dir / "evaluation.md").write_text(render_markdown(results))
    return results


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return value  # written as NaN / Infinity, as metrics.jsonl does
    return value
