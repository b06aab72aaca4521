"""The predictions format and `python -m experiments.evaluate` end to end: a briefly trained
digits MLP's predictions in a run directory come back as evaluation.json / .md / PNGs."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import matplotlib.image
import numpy as np
import optax
import pytest

import models
from experiments import evaluate, evaluation
from experiments.configs import evaluate as evaluate_config
from experiments.evaluation import behavioural, predictions, report
from learned_opt import training


def _config(**overrides):
    config = evaluate_config.get_config()
    config.n_resamples = 200
    config.update(overrides)
    return config


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A small digits MLP trained for 60 steps with Adam; predictions of its snapshots at steps
    30 and 60 saved as two models."""
    run_dir = tmp_path_factory.mktemp("run")
    task = models.get_task("digits_mlp", hidden=(32,), batch_size=64)
    run = training.make_run_fn(task, lambda lr: optax.adam(lr), num_steps=60, eval_every=30,
                               eval_splits=("valid",), keep_snapshots=True,
                               full_split_eval=True)
    curves = run(jnp.float32(1e-2), training.seed_keys([0]))
    for eval_index, step in ((1, 30), (2, 60)):
        params = evaluation.snapshot_params(curves.snapshots, eval_index=eval_index)
        preds = evaluation.predict_task(task, params)
        evaluation.save_predictions(run_dir, f"adam_step{step}", preds)
    predict_fn = lambda x: np.asarray(jax.nn.softmax(task.net.apply(params, x)))
    test_x = np.asarray(task.full_split("test")["x"])
    evaluation.save_behaviour(run_dir, "adam_step60",
                              behavioural.default_checks(predict_fn, test_x))
    return run_dir, task, curves


def test_predict_task_covers_the_full_valid_and_test_splits(trained_run):
    run_dir, task, curves = trained_run
    preds = evaluation.load_predictions(run_dir / "predictions" / "adam_step60.npz")
    for split in ("valid", "test"):
        part = preds.select(split)
        full = task.full_split(split)
        assert part.ids.tolist() == list(range(len(full["y"])))
        assert part.labels.tolist() == np.asarray(full["y"]).tolist()
    # the saved probabilities give the accuracy the training loop measured on full valid
    valid = preds.select("valid")
    final_valid_accuracy = float(curves.evals["valid"]["accuracy"][0, -1])
    assert np.mean(valid.probs.argmax(1) == valid.labels) == pytest.approx(
        final_valid_accuracy, abs=1e-6)
    assert preds.slice_feature_names == ("input_mean", "input_std", "input_max")
    assert len(preds.train_labels) == task.data.x_train.shape[0]


def test_evaluate_main_writes_json_markdown_and_pngs(trained_run):
    run_dir, _, _ = trained_run
    results = evaluate.main(_config(), str(run_dir))
    written = json.loads((run_dir / "evaluation.json").read_text())
    assert set(written["models"]) == {"adam_step30", "adam_step60"}
    model = written["models"]["adam_step60"]
    test = model["splits"]["test"]
    accuracy = test["intervals"]["accuracy"]
    assert accuracy["low"] <= accuracy["value"] <= accuracy["high"]
    assert accuracy["value"] > 0.6  # well above every baseline after 60 steps
    assert model["baselines"]["random_uniform"]["accuracy"] == pytest.approx(0.1)
    assert model["baselines"]["source"] == "train"
    assert accuracy["value"] > 3 * model["baselines"]["zero_rule"]["accuracy"]
    assert model["temperature_scaling"]["fitted_on"] == "valid"
    assert set(test["calibration"]) == {"uniform", "quantile"}
    assert sum(test["calibration"]["uniform"]["bins"]["count"]) == test["num_examples"] == 300
    assert len(model["slices"]["per_slice"]["class"]) == 10
    assert written["models"]["adam_step60"]["behaviour"]["gaussian noise 0.01 std"]["passed"]
    # same test examples for both snapshots: checked, and no paradox is possible
    assert written["paradoxes"] and all(p["same_examples"] and not p["paradox"]
                                        for p in written["paradoxes"])
    markdown = (run_dir / "evaluation.md").read_text()
    for heading in ("Test metrics", "Calibration", "Baselines", "High-error slices",
                    "Simpson", "Behavioural checks"):
        assert heading in markdown
    assert len(results["plots"]) == 5
    for name in results["plots"]:
        assert matplotlib.image.imread(run_dir / name).shape[0] > 100


def test_a_run_without_predictions_is_a_value_error_and_writes_nothing(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("")
    with pytest.raises(ValueError, match="has no predictions"):
        evaluate.main(_config(), str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]


def test_unknown_config_keys_are_rejected():
    with pytest.raises(ValueError, match="unknown evaluate config keys"):
        evaluate.settings_from_config({"n_resample": 10})


def _valid_predictions(n=20, classes=3):
    rng = np.random.default_rng(0)
    return predictions.Predictions(
        split=np.array(["valid"] * (n // 2) + ["test"] * (n - n // 2)),
        ids=np.r_[np.arange(n // 2), np.arange(n - n // 2)],
        labels=rng.integers(0, classes, n), probs=rng.dirichlet(np.ones(classes), n))


@pytest.mark.parametrize("change, message", [
    ({"labels": np.zeros(19, int)}, "same number of examples"),
    ({"probs": np.full((20, 3), 0.5)}, "sum to 1"),
    ({"labels": np.full(20, 3)}, "class range"),
    ({"split": np.array(["valid"] * 20)}, "no rows of split"),
    ({"split": np.array(["train"] * 10 + ["test"] * 10)}, "unknown split"),
    ({"ids": np.zeros(20, int)}, "not unique"),
    ({"slice_features": np.zeros((20, 2)), "slice_feature_names": ("a",)}, "names"),
    ({"task_kind": "regression"}, "task_kind"),
])
def test_invalid_predictions_are_refused_on_save(tmp_path, change, message):
    bad = dataclasses.replace(_valid_predictions(), **change)
    with pytest.raises(ValueError, match=message):
        evaluation.save_predictions(tmp_path, "bad", bad)
    assert not (tmp_path / "predictions" / "bad.npz").exists()


def test_files_are_validated_on_load(tmp_path):
    path = evaluation.save_predictions(tmp_path, "good", _valid_predictions())
    loaded = evaluation.load_predictions(path)
    assert loaded.num_classes == 3 and loaded.select("test").ids.tolist() == list(range(10))
    arrays = dict(np.load(path))
    arrays["probs"] = arrays["probs"] * 0.5
    np.savez(tmp_path / "predictions" / "halved.npz", **arrays)
    with pytest.raises(ValueError, match=r"halved\.npz: .*sum to 1"):
        evaluation.load_predictions(tmp_path / "predictions" / "halved.npz")
    (tmp_path / "predictions" / "halved.npz").unlink()
    del arrays["labels"]
    np.savez(tmp_path / "predictions" / "nolabels.npz", **arrays)
    with pytest.raises(ValueError, match=r"missing arrays \['labels'\]"):
        evaluation.load_run_predictions(tmp_path)
    with pytest.raises(ValueError, match="name"):
        evaluation.save_predictions(tmp_path, "../escape", _valid_predictions())


def test_paradox_report_fires_for_models_scored_on_different_example_sets():
    def model(counts):  # counts: [(stone_size, successes, total)]
        labels, probs, size = [], [], []
        for large, successes, total in counts:
            labels += [0] * total
            probs += [[0.9, 0.1]] * successes + [[0.1, 0.9]] * (total - successes)
            size += [large] * total
        n = len(labels)
        split = np.array(["test"] * n + ["valid"] * 2)
        return predictions.Predictions(
            split=split, ids=np.r_[np.arange(n), 0, 1], labels=np.r_[labels, 0, 1],
            probs=np.r_[np.array(probs), [[0.5, 0.5], [0.5, 0.5]]],
            slice_features=np.r_[size, 0, 0][:, None].astype(float),
            slice_feature_names=("large_stone",))

    treatment_a = model([(0, 81, 87), (1, 192, 263)])
    treatment_b = model([(0, 234, 270), (1, 55, 80)])
    found = report.paradox_report({"A": treatment_a, "B": treatment_b})
    by_stone = next(p for p in found if p["slicing"] == "large_stone")
    assert by_stone["paradox"] and by_stone["pooled_winner"] == "B"
    assert not by_stone["same_examples"]


def test_language_model_predictions_report_perplexity_and_bits_per_character():
    vocab, n = 4, 40
    preds = predictions.Predictions(
        split=np.array(["valid", "test"] * (n // 2)), ids=np.repeat(np.arange(n // 2), 2),
        labels=np.arange(n) % vocab, probs=np.full((n, vocab), 1 / vocab),
        task_kind="language_model", task="text")
    result = report.split_metrics(predictions.validate_predictions(preds), "test",
                                  report.EvaluationSettings(n_resamples=50))
    assert result["perplexity"] == pytest.approx(4.0)
    assert result["bits_per_character"] == pytest.approx(2.0)
