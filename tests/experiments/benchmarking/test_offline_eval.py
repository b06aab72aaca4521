"""The benchmark's offline evaluation: saved predictions are those of the reported runs, and
results.json / report.md carry their calibration and slices."""

from __future__ import annotations

import json

import numpy as np
import pytest
from bench_fakes import FakeTask, fixed_learned_spec
from test_benchmark import run_tiny, tiny_config

import models
from experiments.benchmarking import offline_eval
from experiments.benchmarking.spec import BenchmarkSpec
from experiments.evaluation import load_run_predictions


def test_only_classification_tasks_are_predicted_and_names_are_safe():
    assert offline_eval.supports_predictions(models.get_task("logistic"))
    assert not offline_eval.supports_predictions(models.get_task("regression_mlp"))
    assert not offline_eval.supports_predictions(models.get_task("rosenbrock"))
    assert not offline_eval.supports_predictions(FakeTask())  # no network to predict with
    assert (offline_eval.model_name("digits_mlp/heldout0", "lopt (tuned lr)", "optimization")
            == "digits_mlp-heldout0__lopt--tuned-lr-__optimization")


def test_bad_offline_evaluation_settings_are_refused():
    with pytest.raises(ValueError, match="evaluation_resamples=10 must be >= 100"):
        BenchmarkSpec.from_config(tiny_config(evaluation_resamples=10))
    with pytest.raises(ValueError, match="prediction_sample_rows=-1"):
        BenchmarkSpec.from_config(tiny_config(prediction_sample_rows=-1))


@pytest.mark.slow
def test_benchmark_saves_the_reported_models_predictions_and_evaluates_them(tmp_path,
                                                                            monkeypatch):
    learned = {"fake": fixed_learned_spec(fixed_rate=0.1)}
    config = tiny_config(tuning_free="schedule_free_adamw", evaluation_resamples=100,
                         prediction_sample_rows=8)
    config.tuning.grid_points = 3
    task = models.get_task("logistic")
    results, _, tracker = run_tiny(tmp_path, monkeypatch, task, learned, config)
    optimizers = results["tasks"][0]["optimizers"]
    saved = load_run_predictions(tmp_path / "evaluation")
    assert set(saved) == {run["evaluation_model"] for entry in optimizers.values()
                          for run in entry["runs"].values()}
    for label, entry in optimizers.items():
        runs = entry["runs"]
        if entry["track"] == "self_tuning":  # one run serves both protocols: saved once
            assert runs["optimization"]["evaluation_model"] == \
                runs["generalization"]["evaluation_model"]
        for protocol, run in runs.items():
            evaluation = run["evaluation"]
            # The predictions are of the reported run's first seed at its end (schedule-free
            # at its averaged iterate, as its in-loop evaluation), not of some other model.
            assert evaluation["test_accuracy"] == pytest.approx(
                run["per_seed"]["test_accuracy"][0], abs=1e-6), (label, protocol)
            preds = saved[evaluation["model"]].select("test")
            assert np.mean(preds.probs.argmax(1) == preds.labels) == pytest.approx(
                evaluation["test_accuracy"])
            assert 0.0 <= evaluation["ece_after"] <= 1.0 and evaluation["temperature"] > 0
            assert set(evaluation["per_class_accuracy"]) == {"class=0", "class=1"}
            assert evaluation["seed"] == config.seeds[0]
            assert (tmp_path / evaluation["reliability_diagram"]).is_file()
    written = json.loads((tmp_path / "evaluation" / "evaluation.json").read_text())
    assert set(written["models"]) == set(saved)
    table = results["summary"]["calibration"]["optimization"]
    assert set(table) == set(optimizers) and table["adam"]["num_tasks"] == 1
    assert table["adam"]["ece_before"] == optimizers["adam"]["runs"]["optimization"][
        "evaluation"]["ece_before"]
    report = (tmp_path / "report.md").read_text()
    assert "## Calibration and slices" in report and "reliability_" in report
    samples = [p for p in tracker.artifacts if p.endswith(".csv")]
    assert len(samples) == len(saved)
    header, *rows = open(samples[0]).read().splitlines()
    assert header == "split,input_id,prediction,probability,label" and len(rows) == 8


@pytest.mark.slow
def test_predictions_off_writes_no_evaluation(tmp_path, monkeypatch):
    learned = {"fake": fixed_learned_spec(fixed_rate=0.1)}
    config = tiny_config(predictions=False, learned_tuning="none")
    config.tuning.grid_points = 2
    results, _, _ = run_tiny(tmp_path, monkeypatch, models.get_task("logistic"), learned,
                             config)
    assert not (tmp_path / "evaluation").exists()
    assert "calibration" not in results["summary"]
    assert "Calibration and slices" not in (tmp_path / "report.md").read_text()
