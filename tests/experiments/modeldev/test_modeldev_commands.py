"""Tiny end-to-end runs of `experiments.ensembles` and `experiments.learning_curves` (resume)."""

import json

import pytest

from experiments import ensembles, learning_curves
from experiments.configs import ensembles as ensembles_config
from experiments.configs import learning_curves as curves_config
from experiments.modeldev import curve_experiment


def _tiny_ensembles(optimizers="adam,mlp_digits_mlp"):
    config = ensembles_config.get_config()
    config.task_kwargs = {"hidden": (8,), "batch_size": 32}
    config.num_steps = 20
    config.optimizers = optimizers
    config.tuning_grid_points = 2   # lr 1e-4 or 1e-1 (lopt: its default / 10, * 10)
    config.tuning_seeds = (0,)
    config.num_members = 3
    config.boosting_members = 2
    config.boost_hidden = (8,)
    config.hgb_max_iter = 5
    config.stacking_folds = 2
    config.stacking_tasks = ()
    config.stacking_sklearn = ("logistic",)
    return config


@pytest.mark.slow
def test_ensembles_main(tmp_path):
    results = ensembles.main(_tiny_ensembles(), str(tmp_path))
    assert {"seeds/adam", "bagging/adam", "seeds/mlp_digits_mlp", "bagging/mlp_digits_mlp",
            "mixed/adam+mlp_digits_mlp"} == set(results["ensembles"])
    mixed = results["ensembles"]["mixed/adam+mlp_digits_mlp"]
    assert mixed["members"] == ["adam#0", "mlp_digits_mlp#1", "adam#1"] or \
        mixed["members"] == ["adam#0", "mlp_digits_mlp#0", "adam#1"]
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["protocol"] == "generalization"
    report = (tmp_path / "report.md").read_text()
    assert "Protocol: **generalization**" in report and "Stacking" in report
    assert (tmp_path / "ensembles.png").is_file()
    assert set(results["stacking"]["base"]) == {"digits_mlp_adam", "digits_mlp_mlp_digits_mlp",
                                                "sklearn_logistic"}


def test_ensembles_bad_member_count(tmp_path):
    config = _tiny_ensembles("adam")
    config.num_members = 1
    with pytest.raises(ValueError, match="num_members must be >= 2"):
        ensembles.main(config, str(tmp_path))


@pytest.mark.slow
def test_learning_curves_main_resumes_without_recomputing(tmp_path, monkeypatch):
    config = curves_config.get_config()
    config.task_kwargs = {"batch_size": 32}
    config.sizes = ("4", "8")
    config.optimizers = "adam"
    config.num_steps = 20
    config.fractions = (0.125, 0.25, 0.5, 1.0)
    config.budgets = (10, 20)
    config.budget_sizes = ("8",)
    config.tuning_grid_points = 1
    config.tuning_seeds = (0, 1)   # as many as the final seeds: one compiled run per runner
    config.seeds = (100, 101)
    config.num_resamples = 50
    first = learning_curves.main(config, str(tmp_path))
    points = sorted((tmp_path / "points").glob("*.json"))
    assert len(points) == 2 * 4 + 2
    curve = first["data_curves"]["adam/8"]
    assert len(curve["test_loss_mean"]) == 4 and curve["x"][-1] == first["num_train"]
    assert "fit" in curve and (tmp_path / "curves_data.png").is_file()
    assert "adam/8" in first["pr_curves"] and first["crossings"]
    assert "Protocol: **generalization**" in (tmp_path / "report.md").read_text()

    def no_compute(*args, **kwargs):
        raise AssertionError("a cached point was recomputed")

    monkeypatch.setattr(curve_experiment, "_compute_point", no_compute)
    second = learning_curves.main(config, str(tmp_path))
    assert second["data_curves"] == json.loads(json.dumps(first["data_curves"]))
