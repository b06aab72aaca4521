"""NAS pieces: evolution beats random on a planted space, power-law extrapolation, the spaces."""

import jax
import jax.numpy as jnp
import numpy as np
import optuna
import pytest

from experiments.automl import nas_estimation, nas_final, nas_space
from experiments.automl import study as st
from experiments.automl.space import Categorical, SearchSpace

TARGET = (3, 1, 2, 0, 3, 2, 1, 0, 2, 3)
PLANTED = SearchSpace({f"g{i}": Categorical((0, 1, 2, 3)) for i in range(len(TARGET))})


def mismatches(params, report):
    return float(sum(params[f"g{i}"] != want for i, want in enumerate(TARGET)))


def test_regularized_evolution_beats_random_search_over_seeds():
    best = {}
    for strategy in ("random", "evolution"):
        best[strategy] = np.mean([
            st.run_study(mismatches, PLANTED, sampler=strategy, budget=st.Budget(80), seed=seed,
                         study_name=f"{strategy}{seed}", progress=False,
                         sampler_kwargs={"population_size": 10, "tournament_size": 3}
                         if strategy == "evolution" else None).best_value
            for seed in range(5)])
    assert best["evolution"] + 1.0 <= best["random"], best


def test_power_law_fit_recovers_a_planted_curve():
    steps = np.arange(10, 210, 10, dtype=float)
    noise = np.random.default_rng(0).normal(scale=1e-3, size=steps.size)
    losses = nas_estimation.power_law(steps, 2.0, 0.7, 0.5) + noise
    a, b, c = nas_estimation.fit_power_law(steps, losses)
    assert (a, b, c) == pytest.approx((2.0, 0.7, 0.5), rel=0.1)
    predicted = nas_estimation.extrapolate(steps, losses, 2000)
    assert predicted == pytest.approx(nas_estimation.power_law(2000, 2.0, 0.7, 0.5), rel=0.01)
    assert nas_estimation.extrapolate([10, 20], [1.0, 0.8], 2000) == 0.8  # too few points
    with pytest.raises(ValueError, match="3 finite points"):
        nas_estimation.fit_power_law([0, 10], [1.0, 0.5])


def test_estimator_rejects_bad_settings():
    with pytest.raises(ValueError, match="unknown estimator"):
        nas_estimation.make_estimator("oracle")
    with pytest.raises(ValueError, match="3 evaluations"):
        nas_estimation.make_estimator("extrapolation", num_steps=20, eval_every=10)


def test_mlp_space_is_conditional_on_depth():
    space = nas_space.search_space("mlp", max_layers=3)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    archs = []
    study.optimize(lambda t: (archs.append(nas_space.arch_from_params(
        "mlp", space.suggest(t))), 0.0)[1], n_trials=20)
    assert {len(a["hidden"]) for a in archs} == {1, 2, 3}
    assert nas_space.default_arch("mlp", "mnist1d") == {"hidden": (100, 100),
                                                        "activation": "relu"}


@pytest.mark.parametrize("dataset", ["digits", "mnist1d"])
@pytest.mark.parametrize("pooling", nas_space.POOLINGS)
def test_search_cnn_shapes(dataset, pooling):
    arch = {"channels": (4, 8), "kernels": (3, 5), "pooling": pooling, "activation": "relu"}
    task = nas_space.build_task("cnn", dataset, arch, batch_size=4)
    params = jax.eval_shape(task.init, jax.random.key(0))
    x = jnp.zeros((4, *nas_space.INPUT_SHAPES[dataset]))
    assert jax.eval_shape(task.net.apply, params, x).shape == (4, 10)


def test_bad_nas_input_raises():
    with pytest.raises(ValueError, match="unknown architecture family"):
        nas_space.search_space("rnn")
    with pytest.raises(ValueError, match="datasets"):
        nas_space.build_task("mlp", "text", {"hidden": (8,), "activation": "relu"})
    with pytest.raises(ValueError, match="divisible"):
        nas_space.search_space("transformer", heads=(3,), model_widths=(32,))


def test_bootstrap_interval_brackets_the_mean():
    per_example = np.random.default_rng(0).integers(0, 2, size=300).astype(float)
    low, high = nas_final.bootstrap_interval(per_example)
    assert low < per_example.mean() < high and high - low < 0.15
    assert nas_final.bootstrap_interval(np.ones(10)) == (1.0, 1.0)
