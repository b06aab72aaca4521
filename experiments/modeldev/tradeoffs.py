"""Quality-vs-cost trade-offs of optimizers (Pareto fronts) and per-class precision-recall.

    points = benchmark_points(json.load(open("WORKDIR/results.json")), "generalization")
    mask = pareto_front([p["cost"]["ms_per_step"] for p in points],
                        [p["quality"] for p in points])
    pr = precision_recall_per_class(labels, probs)     # sklearn, one-vs-rest

Quality is a loss (lower is better): the benchmark's per-protocol score (optimization: final
smoothed training loss; generalization: test loss at the best-validation evaluation), the
median over tasks of the seed means. Costs: milliseconds per step, optimizer-state bytes per
parameter, and meta-training compute from the learned optimizer's card (0 for hand-designed
baselines).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

COSTS = ("ms_per_step", "state_bytes_per_param", "meta_train_wall_s")


def pareto_front(costs: Sequence[float], qualities: Sequence[float]) -> np.ndarray:
    """Boolean mask of the points no other point dominates (lower cost AND lower loss, one of
    them strictly). Non-finite points are never on the front."""
    costs = np.asarray(costs, np.float64)
    qualities = np.asarray(qualities, np.float64)
    if costs.shape != qualities.shape or costs.ndim != 1:
        raise ValueError(f"costs and qualities must be equal 1-D; got {costs.shape}, "
                         f"{qualities.shape}")
    finite = np.isfinite(costs) & np.isfinite(qualities)
    mask = finite.copy()
    for i in np.flatnonzero(finite):
        others = finite & (costs <= costs[i]) & (qualities <= qualities[i]) & (
            (costs < costs[i]) | (qualities < qualities[i]))
        mask[i] = not others.any()
    return mask


def meta_training_seconds(card: dict | None) -> float:
    """Meta-training wall seconds recorded on a pretrained card: its `meta_training_compute`
    text ('... 733 s wall') or `wall_time_s_last_session`; 0 for no card (a hand-designed
    optimizer); NaN when a card records neither."""
    if not card:
        return 0.0
    text = card.get("meta_training_compute")
    if isinstance(text, str):
        match = re.search(r"([\d.]+)\s*s wall", text)
        if match:
            return float(match.group(1))
    wall = card.get("wall_time_s_last_session")
    return float(wall) if isinstance(wall, int | float) else math.nan


def benchmark_points(results: dict, protocol: str) -> list[dict]:
    """One point per optimizer of a benchmark results.json (schema 2): quality and costs.

    Returns [{"label", "kind", "track", "protocol", "quality" (median over tasks of the seed
    mean score), "quality_name", "num_tasks", "cost": {ms_per_step, state_bytes_per_param,
    meta_train_wall_s}}]."""
    if protocol not in results.get("protocols", ()):
        raise ValueError(f"protocol {protocol!r} is not in this benchmark run; it ran "
                         f"{results.get('protocols')}")
    per_label: dict[str, dict] = {}
    for task in results["tasks"]:
        for label, entry in task["optimizers"].items():
            run = entry["runs"].get(protocol)
            if run is None:
                continue
            item = per_label.setdefault(label, {
                "label": label, "kind": entry["kind"], "track": entry["track"],
                "protocol": protocol, "scores": [], "ms": [], "bytes": [],
                "quality_name": run["score"].get("name"),
                "meta": meta_training_seconds(entry.get("config"))})
            item["scores"].append(run["score"].get("mean"))
            item["ms"].append(1000 * entry["time_per_step_s"])
            item["bytes"].append(entry["state_bytes_per_param"])
    points = []
    for item in per_label.values():
        scores = np.asarray([np.nan if s is None else s for s in item["scores"]], np.float64)
        points.append({
            "label": item["label"], "kind": item["kind"], "track": item["track"],
            "protocol": protocol, "quality_name": item["quality_name"],
            "quality": float(np.median(scores)) if np.isfinite(scores).all() else math.nan,
            "num_tasks": len(scores),
            "cost": {"ms_per_step": float(np.median(item["ms"])),
                     "state_bytes_per_param": float(np.median(item["bytes"])),
                     "meta_train_wall_s": item["meta"]}})
    return points


def plot_pareto(points: list[dict], cost: str, path, *, title: str) -> None:
    """Scatter of quality vs `cost` with the Pareto front highlighted; `title` names the
    protocol."""
    if cost not in COSTS:
        raise ValueError(f"unknown cost {cost!r}; expected one of {COSTS}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    costs = [p["cost"][cost] for p in points]
    quality = [p["quality"] for p in points]
    mask = pareto_front(costs, quality)
    figure, axis = plt.subplots(figsize=(6, 4.5))
    for point, on_front in zip(points, mask, strict=True):
        axis.scatter(point["cost"][cost], point["quality"], color="C3" if on_front else "C0")
        axis.annotate(point["label"], (point["cost"][cost], point["quality"]), fontsize=7)
    front = sorted((c, q) for c, q, m in zip(costs, quality, mask, strict=True) if m)
    if front:
        axis.plot(*zip(*front, strict=True), color="C3", linestyle="--", label="Pareto front")
        axis.legend()
    axis.set_xlabel(cost)
    axis.set_ylabel(points[0]["quality_name"] if points else "loss")
    axis.set_title(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def precision_recall_per_class(labels, probs, *, max_points: int = 50) -> dict:
    """One-vs-rest precision-recall curve and average precision of every class (sklearn).

    Curves are thinned to at most `max_points` points for JSON. A class absent from `labels`
    has average precision None."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    labels = np.asarray(labels).astype(np.int64)
    probs = np.asarray(probs, np.float64)
    if probs.ndim != 2 or probs.shape[0] != labels.shape[0]:
        raise ValueError(f"probs must be (N, C) for N={labels.shape[0]} labels; got "
                         f"{probs.shape}")
    result = {}
    for cls in range(probs.shape[1]):
        positive = labels == cls
        if not positive.any():
            result[str(cls)] = {"average_precision": None, "precision": [], "recall": []}
            continue
        precision, recall, _ = precision_recall_curve(positive, probs[:, cls])
        keep = np.unique(np.linspace(0, len(precision) - 1, min(max_points, len(precision)))
                         .astype(int))
        result[str(cls)] = {
            "average_precision": float(average_precision_score(positive, probs[:, cls])),
            "precision": precision[keep].tolist(), "recall": recall[keep].tolist()}
    return result


def plot_pr_curves(curves: dict, path, *, title: str) -> None:
    """Per-class precision-recall curves of one model; `title` names protocol and split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5.5, 4.5))
    for cls, curve in curves.items():
        if curve["average_precision"] is None:
            continue
        axis.plot(curve["recall"], curve["precision"],
                  label=f"{cls} (AP {curve['average_precision']:.2f})", linewidth=1)
    axis.set_xlabel("recall")
    axis.set_ylabel("precision")
    axis.set_title(title, fontsize=9)
    axis.legend(fontsize=6, ncol=2)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
