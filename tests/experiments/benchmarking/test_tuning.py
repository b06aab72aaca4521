"""Tuning: each protocol reads only its splits, one grid serves both protocols, known optima are
found, studies resume, diverged trials rank last."""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from bench_fakes import FakeTask

from experiments.benchmarking import baselines, runner, tuning
from experiments.benchmarking.plan import build_plan
from experiments.benchmarking.spec import BenchmarkSpec
from learned_opt import training

STEPS, EVAL_EVERY, SEEDS = 40, 20, (0, 1)


def small_spec(**kwargs):
    defaults = dict(num_steps=STEPS, eval_every=EVAL_EVERY, seeds=SEEDS, grid_points=3,
                    weight_decay_points=1, last_k=1, smoothing_window=1)
    return tuning.TuningSpec(**(defaults | kwargs))


def tunable(name):
    return tuning.Tunable(name, lambda h: baselines.make_baseline(name, h),
                          baselines.get_baseline(name).ranges)


def known_optimum_run(call_log, nan_above=None):
    """A stand-in for the compiled run: valid loss = (log10(lr) + 2)^2 + 0.1 (best lr 1e-2),
    train loss = (log10(lr) + 1)^2 + 0.2 (best lr 1e-1); every loss is NaN when lr >
    `nan_above` (a divergence)."""

    def run(hparams, keys):
        lr = float(hparams["learning_rate"])
        call_log.append(lr)
        valid_value = (math.log10(lr) + 2.0) ** 2 + 0.1
        train_value = (math.log10(lr) + 1.0) ** 2 + 0.2
        if nan_above is not None and lr > nan_above:
            valid_value = train_value = math.nan
        num_seeds, num_evals = keys.shape[0], STEPS // EVAL_EVERY + 1
        valid = np.full((num_seeds, num_evals), valid_value)
        return training.Curves(np.full((num_seeds, STEPS), train_value),
                               {"valid": {"loss": valid}}, np.arange(num_evals))

    return run


@pytest.mark.parametrize("protocols, splits", [(("optimization",), {"train"}),
                                               (("generalization",), {"train", "valid"}),
                                               (("optimization", "generalization"),
                                                {"train", "valid"})])
def test_each_protocols_tuning_reads_only_its_splits(protocols, splits):
    task = FakeTask(forbidden_splits=("test",) if "generalization" in protocols
                    else ("valid", "test"))
    result = tuning.tune(task, tunable("sgd"), small_spec(protocols=protocols), storage=None,
                         study_name="trap")
    assert set(task.requested_splits) == splits
    assert len(result.trials) == 3 and set(result.best) == set(protocols)
    assert all(math.isfinite(v) for v in result.best_value.values())


@pytest.mark.slow
def test_the_benchmarks_shared_run_reads_only_the_tuning_splits():
    """The compiled run tuning shares with the final runs evaluates nothing tuning may not read
    (the final runs read valid / test later, from snapshots, through a separate function)."""
    config = ml_collections.ConfigDict({
        "protocol": "optimization", "baselines": "adam", "learned": "", "num_steps": STEPS,
        "eval_every": EVAL_EVERY, "eval_batches": 1, "full_split_eval": True, "seeds": (0, 1),
        "smoothing_window": 5, "curve_stride": 5,
        "tuning": {"sampler": "grid", "grid_points": 2, "weight_decay_points": 1,
                   "num_trials": 2, "seeds": (5, 6), "last_k": 1, "sampler_seed": 0}})
    for protocol, splits in (("optimization", {"train"}), ("generalization", {"train", "valid"})):
        config.protocol = protocol
        spec = BenchmarkSpec.from_config(config)
        (adam, *_) = build_plan(spec, [])
        task = FakeTask(forbidden_splits=("test",))
        runner.compile_run(task, adam, 2, spec)
        assert set(task.requested_splits) == splits, protocol


def test_grid_search_objectives_match_a_direct_run(tmp_path):
    task = FakeTask()
    spec = small_spec(smoothing_window=5)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    adam = tunable("adam")
    run = tuning.make_tuning_run_fn(task, adam, spec)
    result = tuning.tune(task, adam, spec, storage=storage, study_name="fake", run_fn=run)
    grid = tuning.search_grid(adam, spec)["learning_rate"]
    assert sorted(h["learning_rate"] for h, _ in result.trials) == pytest.approx(grid)
    for protocol in ("optimization", "generalization"):
        assert result.best_value[protocol] == min(v[protocol] for _, v in result.trials)
        assert len({v[protocol] for _, v in result.trials}) == 3  # the learning rate matters
        # The winner's objective is what a direct run of the training loop at that lr gives.
        hparams = {"learning_rate": jnp.float32(result.best[protocol]["learning_rate"])}
        curves = jax.device_get(run(hparams, training.seed_keys(SEEDS)))
        direct = (tuning.training_objective(curves, 5) if protocol == "optimization"
                  else tuning.validation_objective(curves, spec.last_k))
        assert direct == pytest.approx(result.best_value[protocol])


def test_one_grid_finds_each_protocols_optimum_and_resumes_without_rerunning(tmp_path):
    calls = []
    spec = small_spec(grid_points=7)  # sgd's grid 1e-3 ... 1 holds 1e-2 and 1e-1 exactly
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    first = tuning.tune(FakeTask(), tunable("sgd"), spec, storage=storage, study_name="s",
                        run_fn=known_optimum_run(calls))
    assert len(calls) == 7  # both protocols from the same 7 trials
    assert first.best["generalization"]["learning_rate"] == pytest.approx(1e-2)
    assert first.best["optimization"]["learning_rate"] == pytest.approx(1e-1)
    assert first.best_value == pytest.approx({"generalization": 0.1, "optimization": 0.2})
    assert first.at_edge == {"generalization": [], "optimization": []}
    again = tuning.tune(FakeTask(), tunable("sgd"), spec, storage=storage, study_name="s",
                        run_fn=known_optimum_run(calls))
    assert len(calls) == 7, "a finished study must not run its trials again"
    assert again.best == first.best
    # A changed spec is a different study: nothing is reused.
    other = tuning.tune(FakeTask(), tunable("sgd"), small_spec(grid_points=2), storage=storage,
                        study_name="s", run_fn=known_optimum_run(calls))
    assert other.study_name != first.study_name and len(calls) == 9
    assert other.at_edge["generalization"] == []  # a 2-point grid has only edges: not flagged


def test_diverged_trials_rank_worst():
    calls = []
    spec = small_spec(grid_points=4)  # sgd grid: 1e-3, 1e-2, 1e-1, 1
    result = tuning.tune(FakeTask(), tunable("sgd"), spec, storage=None, study_name="d",
                         run_fn=known_optimum_run(calls, nan_above=2e-3))
    for protocol in ("optimization", "generalization"):
        values = [v[protocol] for _, v in result.trials]
        assert sum(math.isinf(v) for v in values) == 3
        assert result.best[protocol]["learning_rate"] == pytest.approx(1e-3)
        assert result.at_edge[protocol] == ["learning_rate"]  # the range's low end: flagged


def test_objectives_and_inf_on_nan():
    valid = np.array([[1.0, 0.5], [1.0, 0.7]])
    train = np.array([[4.0, 3.0, 2.0, 1.0], [4.0, 4.0, 2.0, 2.0]])
    ok = training.Curves(train, {"valid": {"loss": valid}}, np.arange(2))
    assert tuning.validation_objective(ok, last_k=1) == pytest.approx(0.6)
    assert tuning.training_objective(ok, window=2) == pytest.approx((1.5 + 2.0) / 2)
    bad_train = ok._replace(train_loss=np.array([[1.0, np.nan, 1, 1], [1, 1, 1, 1]]))
    assert tuning.validation_objective(bad_train, last_k=1) == math.inf
    assert tuning.training_objective(bad_train, window=2) == math.inf


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_samplers_stay_in_range_and_pick_the_best(sampler):
    calls = []
    spec = small_spec(sampler=sampler, num_trials=6)
    result = tuning.tune(FakeTask(), tunable("adamw"), spec, storage=None, study_name=sampler,
                         run_fn=known_optimum_run(calls))
    assert len(result.trials) == 6 == len(calls)
    for hparams, _ in result.trials:
        for name, (low, high) in baselines.get_baseline("adamw").ranges.items():
            assert low <= hparams[name] <= high
    for protocol in ("optimization", "generalization"):
        assert result.best_value[protocol] == min(v[protocol] for _, v in result.trials)


def test_bad_names_and_budgets_list_the_valid_choices():
    with pytest.raises(ValueError, match="valid tuned baselines: .*adam.*tuning-free: .*prodigy"):
        baselines.get_baseline("rmsprop")
    with pytest.raises(ValueError, match="valid samplers"):
        tuning.TuningSpec(sampler="cmaes")
    with pytest.raises(ValueError, match="protocols .*optimization"):
        tuning.TuningSpec(protocols=("speed",))
    with pytest.raises(ValueError, match="grid_points=0 .* at least 1 trial"):
        tuning.TuningSpec(grid_points=0)
    with pytest.raises(ValueError, match="num_trials=0"):
        tuning.TuningSpec(sampler="tpe", num_trials=0)
    with pytest.raises(ValueError, match="last_k"):
        tuning.TuningSpec(num_steps=40, eval_every=20, last_k=5)
    with pytest.raises(ValueError, match="needs hyperparameters"):
        baselines.make_baseline("adamw", {"learning_rate": 1e-3})


def test_log_grid_spans_the_range():
    grid = tuning.log_grid(1e-4, 1e-1, 4)
    assert grid == pytest.approx([1e-4, 1e-3, 1e-2, 1e-1])


@pytest.mark.parametrize("sampler", ["grid", "random"])
def test_benchmark_tuning_is_an_automl_study_with_every_protocols_objective(tmp_path, sampler):
    """The benchmark tunes through experiments.automl: the study is readable with automl's
    API, holds each protocol's objective per trial, and walks the same points that automl's
    own search does for the same space, sampler and seed."""
    import optuna

    from experiments.automl import study as automl_study

    calls = []
    spec = small_spec(grid_points=5, sampler=sampler, num_trials=4, sampler_seed=3)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    sgd = tunable("sgd")
    result = tuning.tune(FakeTask(), sgd, spec, storage=storage, study_name="s",
                         run_fn=known_optimum_run(calls))
    read = automl_study.read_result(optuna.load_study(study_name=result.study_name,
                                                      storage=storage))
    assert read.num_complete == len(result.trials) == (5 if sampler == "grid" else 4)
    for trial, (hparams, values) in zip(read.trials, result.trials, strict=True):
        assert trial.params == hparams and trial.attrs["objectives"] == values
        assert trial.value == values["optimization"]  # the study's value: first protocol's
    space = tuning.search_space(sgd, spec)
    direct = automl_study.search(
        lambda params, report: (math.log10(params["learning_rate"]) + 1.0) ** 2 + 0.2, space,
        sampler=sampler, seed=spec.sampler_seed, grid_points=spec.grid_points,
        budget=automl_study.Budget(len(result.trials)), storage=None, study_name="direct",
        sampler_kwargs={"startup_trials": 4}, progress=False)
    assert [t.params for t in direct.trials] == [h for h, _ in result.trials]
