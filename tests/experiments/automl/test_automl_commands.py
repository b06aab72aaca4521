"""Tiny end-to-end `hpo` and `nas` mains: results.json / report.md, resume without re-running."""

import json
import math

import optuna
import pytest
from automl_fakes import TrapTask

import learned_opt as lo
from experiments import hpo, nas
from experiments.automl import hpo_experiment
from experiments.configs import hpo as hpo_config
from experiments.configs import hpo_meta as hpo_meta_config
from experiments.configs import nas as nas_config


def tiny_hpo(**overrides):
    c = hpo_config.get_config()
    c.task = "logistic"
    c.num_steps, c.eval_every, c.seeds, c.last_k = 20, 10, (0,), 1
    c.num_trials, c.startup_trials, c.progress = 4, 2, False
    for key, value in overrides.items():
        c[key] = value
    return c


def num_stored_trials(workdir):
    summaries = optuna.get_all_study_summaries(f"sqlite:///{workdir / 'optuna.db'}")
    return sum(s.n_trials for s in summaries)


def test_hpo_main_writes_results_and_resumes(tmp_path):
    config = tiny_hpo()
    hpo.main(config, str(tmp_path))
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["num_complete"] == 4 and math.isfinite(results["best_value"])
    assert 1e-4 <= results["best_params"]["learning_rate"] <= 1e-1
    report = (tmp_path / "report.md").read_text()
    assert "objective_vs_params.png" in report and (tmp_path / "objective_vs_params.png").exists()
    hpo.main(config, str(tmp_path))  # resume: no trial runs again
    assert num_stored_trials(tmp_path) == 4
    assert json.loads((tmp_path / "results.json").read_text())["trials"] == results["trials"]
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 4


def test_hpo_search_never_reads_test(tmp_path):
    task = TrapTask()
    config = tiny_hpo(sampler="coarse_to_fine", pruner="median", rungs=(0.5, 1.0),
                      prune_startup=1)
    results = hpo_experiment.run_hpo(config, tmp_path, task=task)
    assert task.requested_splits == {"train", "valid"}
    assert results["num_complete"] + results["num_pruned"] == 4


@pytest.mark.parametrize("overrides, match", [
    (dict(sampler="anneal"), "unknown sampler"), (dict(pruner="early"), "unknown pruner"),
    (dict(sampler="grid", grid_points=6, num_trials=5), "below the grid"),
    (dict(space={}), "empty"),
])
def test_hpo_bad_config_raises_before_training(tmp_path, overrides, match):
    with pytest.raises(ValueError, match=match):
        hpo.main(tiny_hpo(**overrides), str(tmp_path))
    assert not (tmp_path / "optuna.db").exists()


@pytest.mark.slow
def test_hpo_compare_adam_budget_vs_a_learned_optimizer(tmp_path):
    config = tiny_hpo()
    config.compare.update(enabled=True, budgets=(1, 2), search_seeds=(0,), final_seeds=(5,),
                          learned_optimizers="mlp_digits_mlp", learned_trials=(2,))
    results = hpo_experiment.run_hpo(config, tmp_path)
    cmp = results["comparison"]
    assert [r["trials"] for r in cmp["adam"]] == [1, 2]
    assert cmp["adam"][1]["search_valid"] <= cmp["adam"][0]["search_valid"]
    default, tuned = cmp["learned_optimizers"]
    assert default["name"] == tuned["name"] == "mlp_digits_mlp"
    assert default["trials"] == 0 and tuned["trials"] == 2 and cmp["learned_optimizers_tuned"]
    assert math.isfinite(default["test"]) and math.isfinite(tuned["test"])
    # the learned optimizer's search spans its card's rate x 10^(+-1) (learned_lr_decades=2)
    card_lr = lo.load_pretrained_theta("mlp_digits_mlp")[2]["learning_rate"]
    assert all(card_lr / 10 <= lr <= card_lr * 10 for lr in tuned["learning_rates"])
    assert "mlp_digits_mlp (2 trials)" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "budget_curve.png").exists() and (tmp_path / "final_evals.json").exists()


@pytest.mark.slow
def test_hpo_meta_two_trial_smoke(tmp_path):
    config = hpo_meta_config.get_config()
    config.num_trials, config.startup_trials, config.progress = 2, 2, False
    hpo.main(config, str(tmp_path))
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["objective"] == "meta" and results["num_complete"] == 2
    assert set(results["best_params"]) == {"outer_lr", "sigma", "unroll_length"}
    assert all(len(t["intermediate"]) == 2 for t in results["trials"])


def test_nas_main_writes_results_and_resumes(tmp_path):
    c = nas_config.get_config()
    c.datasets = ("digits",)
    c.space.update(max_layers=1, widths=(8, 16), activations=("relu",))
    c.update(num_trials=3, search_seeds=(0,), strategies=("random", "evolution"),
             population_size=2, tournament_size=1, search_steps=20, search_eval_every=10,
             final_steps=20, final_eval_every=10, final_seeds=(10,), progress=False)
    nas.main(c, str(tmp_path))
    results = json.loads((tmp_path / "results.json").read_text())
    digits = results["per_dataset"]["digits"]
    assert set(digits["strategies"]) == {"random", "evolution"}
    assert digits["found_arch"]["hidden"][0] in (8, 16)
    labels = [row["label"] for row in digits["final"]]
    assert labels[1] == "zoo default" and digits["final"][1]["num_params"] == 64 * 64 + 64 + 650
    for row in digits["final"]:
        low, high = row["accuracy_ci"]
        assert low <= row["test_accuracy"] <= high and row["ms_per_step"] > 0
    assert (tmp_path / "report.md").exists() and (tmp_path / "search_digits.png").exists()
    nas.main(c, str(tmp_path))  # resume: no trial and no final run again
    assert num_stored_trials(tmp_path) == 6
