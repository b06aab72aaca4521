"""Tuning of the baselines: reads only train/valid, finds known optima, resumes, ranks NaN last."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from bench_fakes import FakeTask

from experiments.benchmarking import tuning
from learned_opt import training

STEPS, EVAL_EVERY, SEEDS = 40, 20, (0, 1)


def small_spec(**kwargs):
    defaults = dict(num_steps=STEPS, eval_every=EVAL_EVERY, seeds=SEEDS, grid_points=3,
                    weight_decay_points=1, last_k=1)
    return tuning.TuningSpec(**(defaults | kwargs))


def known_optimum_run(call_log, nan_above=None):
    """A stand-in for the compiled run: valid loss = (log10(lr) + 2)^2 + 0.1, i.e. best lr = 1e-2;
    every loss is NaN when lr > `nan_above` (a divergence)."""

    def run(hparams, keys):
        lr = float(hparams["learning_rate"])
        call_log.append(lr)
        value = (math.log10(lr) + 2.0) ** 2 + 0.1
        if nan_above is not None and lr > nan_above:
            value = math.nan
        num_seeds, num_evals = keys.shape[0], STEPS // EVAL_EVERY + 1
        valid = np.full((num_seeds, num_evals), value)
        return training.Curves(np.full((num_seeds, STEPS), value),
                                 {"valid": {"loss": valid}}, np.arange(num_evals))

    return run


def test_tuning_reads_only_train_and_valid():
    task = FakeTask(forbidden_splits=("test",))
    result = tuning.tune_baseline(task, "sgd", small_spec(), storage=None, study_name="trap")
    assert set(task.requested_splits) == {"train", "valid"}
    assert len(result.trials) == 3
    assert math.isfinite(result.best_value)


def test_grid_search_objective_matches_a_direct_run(tmp_path):
    task = FakeTask()
    spec = small_spec()
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    run = tuning.make_tuning_run_fn(task, tuning.get_baseline("adam"), spec)
    result = tuning.tune_baseline(task, "adam", spec, storage=storage, study_name="fake",
                                  run_fn=run)
    grid = tuning.search_grid(tuning.get_baseline("adam"), spec)["learning_rate"]
    assert sorted(h["learning_rate"] for h, _ in result.trials) == pytest.approx(grid)
    assert result.best_value == min(v for _, v in result.trials)
    assert len({v for _, v in result.trials}) == 3  # the learning rate matters
    # The winner's objective is what a direct run of the training loop at that lr gives.
    hparams = {"learning_rate": jnp.float32(result.best_hparams["learning_rate"])}
    curves = jax.device_get(run(hparams, training.seed_keys(SEEDS)))
    assert tuning.validation_objective(curves, spec.last_k) == pytest.approx(result.best_value)


def test_grid_finds_known_optimum_and_resumes_without_rerunning(tmp_path):
    calls = []
    spec = small_spec(grid_points=7)  # adam's grid 1e-4 ... 1e-1 holds 1e-2 exactly
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    first = tuning.tune_baseline(FakeTask(), "adam", spec, storage=storage, study_name="s",
                                 run_fn=known_optimum_run(calls))
    assert first.best_hparams["learning_rate"] == pytest.approx(1e-2)
    assert first.best_value == pytest.approx(0.1)
    assert len(calls) == 7 and first.at_edge == []
    again = tuning.tune_baseline(FakeTask(), "adam", spec, storage=storage, study_name="s",
                                 run_fn=known_optimum_run(calls))
    assert len(calls) == 7, "a finished study must not run its trials again"
    assert again.best_hparams == first.best_hparams
    # A changed spec is a different study: nothing is reused.
    other = tuning.tune_baseline(FakeTask(), "adam", small_spec(grid_points=2), storage=storage,
                                 study_name="s", run_fn=known_optimum_run(calls))
    assert other.study_name != first.study_name and len(calls) == 9
    assert other.at_edge == []  # a 2-point grid has only edges: not flagged


def test_diverged_trials_rank_worst():
    calls = []
    spec = small_spec(grid_points=4)  # sgd grid: 1e-3, 1e-2, 1e-1, 1
    result = tuning.tune_baseline(FakeTask(), "sgd", spec, storage=None, study_name="d",
                                  run_fn=known_optimum_run(calls, nan_above=2e-3))
    values = dict((h["learning_rate"], v) for h, v in result.trials)
    assert sum(math.isinf(v) for v in values.values()) == 3
    assert result.best_hparams["learning_rate"] == pytest.approx(1e-3)
    assert result.at_edge == ["learning_rate"]  # the winner is the range's low end: flagged


def test_validation_objective_is_inf_on_nan():
    valid = np.array([[1.0, 0.5], [1.0, 0.7]])
    ok = training.Curves(np.ones((2, 4)), {"valid": {"loss": valid}}, np.arange(2))
    assert tuning.validation_objective(ok, last_k=1) == pytest.approx(0.6)
    bad_train = ok._replace(train_loss=np.array([[1.0, np.nan, 1, 1], [1, 1, 1, 1]]))
    assert tuning.validation_objective(bad_train, last_k=1) == math.inf


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_samplers_stay_in_range_and_pick_the_best(sampler):
    calls = []
    spec = small_spec(sampler=sampler, num_trials=6)
    result = tuning.tune_baseline(FakeTask(), "adamw", spec, storage=None, study_name=sampler,
                                  run_fn=known_optimum_run(calls))
    assert len(result.trials) == 6 == len(calls)
    for hparams, _ in result.trials:
        for name, (low, high) in tuning.get_baseline("adamw").ranges.items():
            assert low <= hparams[name] <= high
    assert result.best_value == min(v for _, v in result.trials)


def test_bad_names_list_the_valid_choices():
    with pytest.raises(ValueError, match="valid baselines: .*adam"):
        tuning.get_baseline("rmsprop")
    with pytest.raises(ValueError, match="valid samplers"):
        tuning.TuningSpec(sampler="cmaes")
    with pytest.raises(ValueError, match="last_k"):
        tuning.TuningSpec(num_steps=40, eval_every=20, last_k=5)
    with pytest.raises(ValueError, match="needs hyperparameters"):
        tuning.make_baseline("adamw", {"learning_rate": 1e-3})


def test_log_grid_spans_the_range():
    grid = tuning.log_grid(1e-4, 1e-1, 4)
    assert grid == pytest.approx([1e-4, 1e-3, 1e-2, 1e-1])
