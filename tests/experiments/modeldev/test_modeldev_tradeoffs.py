"""Pareto fronts, quality/cost points from a benchmark results.json, per-class PR curves."""

import numpy as np
import pytest

from experiments.modeldev import tradeoffs


def test_pareto_front_hand_case():
    costs = [1.0, 2.0, 3.0, 2.0, np.nan]
    losses = [0.5, 0.4, 0.1, 0.6, 0.0]
    np.testing.assert_array_equal(tradeoffs.pareto_front(costs, losses),
                                  [True, True, True, False, False])


def _optimizer(kind, score, time_s, bytes_per_param, card=None):
    return {"kind": kind, "track": "tuned", "config": card, "time_per_step_s": time_s,
            "state_bytes_per_param": bytes_per_param,
            "runs": {"generalization": {"score": {"name": "test_loss", "mean": score}}}}


def test_benchmark_points_from_results():
    card = {"meta_training_compute": "8000 PES outer steps ..., 733 s wall"}
    results = {"protocols": ["generalization"], "tasks": [
        {"optimizers": {"adam": _optimizer("baseline", 0.3, 0.002, 8.0),
                        "lopt": _optimizer("learned", 0.5, 0.004, 28.0, card)}},
        {"optimizers": {"adam": _optimizer("baseline", 0.5, 0.004, 8.0),
                        "lopt": _optimizer("learned", 0.4, 0.006, 28.0, card)}}]}
    points = {p["label"]: p for p in tradeoffs.benchmark_points(results, "generalization")}
    assert points["adam"]["quality"] == pytest.approx(0.4)
    assert points["adam"]["cost"]["ms_per_step"] == pytest.approx(3.0)
    assert points["lopt"]["cost"]["meta_train_wall_s"] == 733.0
    assert points["adam"]["cost"]["meta_train_wall_s"] == 0.0
    with pytest.raises(ValueError, match="not in this benchmark run"):
        tradeoffs.benchmark_points(results, "optimization")


def test_precision_recall_per_class():
    labels = np.asarray([0, 0, 1, 1, 2])
    probs = np.asarray([[.9, .05, .05], [.8, .1, .1], [.1, .8, .1], [.2, .7, .1],
                        [.1, .1, .8]])
    pr = tradeoffs.precision_recall_per_class(labels, probs)
    assert [pr[c]["average_precision"] for c in "012"] == [1.0, 1.0, 1.0]
    swapped = tradeoffs.precision_recall_per_class(labels, probs[:, [1, 0, 2]])
    assert swapped["0"]["average_precision"] < 1.0
