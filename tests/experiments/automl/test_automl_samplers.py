"""Samplers reach a known optimum within budget; studies resume, fail NaN trials, refuse bad
input.
"""

import importlib.util
import math

import pytest

from experiments.automl import study as st
from experiments.automl.space import Float, SearchSpace

SPACE = SearchSpace({"x": Float(1e-4, 1.0, log=True), "y": Float(-1.0, 1.0)})


def known(params, report=None):
    """Minimum 0 at x = 1e-2, y = 0.3."""
    return (math.log10(params["x"]) + 2.0) ** 2 + (params["y"] - 0.3) ** 2


@pytest.mark.parametrize("sampler, trials, tolerance", [
    ("random", 200, 0.1), ("tpe", 60, 0.05), ("evolution", 100, 0.05),
    ("coarse_to_fine", 60, 0.05), ("cmaes", 60, 0.05),
])
def test_sampler_finds_the_optimum(sampler, trials, tolerance):
    if sampler == "cmaes" and importlib.util.find_spec("cmaes") is None:
        with pytest.raises(ImportError, match="cmaes"):
            st.search(known, SPACE, sampler="cmaes", budget=st.Budget(4), study_name="c",
                      progress=False)
        pytest.skip("Optuna's CMA-ES needs the `cmaes` package, not installed here")
    result = st.search(known, SPACE, sampler=sampler, budget=st.Budget(trials),
                       study_name=sampler, seed=0, progress=False)
    assert result.num_complete == trials
    assert result.best_value < tolerance, result.best_params


def test_grid_finds_the_best_grid_point_and_needs_its_budget():
    result = st.search(known, SPACE, sampler="grid", grid_points=5, budget=st.Budget(25),
                       study_name="g", progress=False)
    best_on_grid = min(known(p) for p in SPACE.grid_points(5))
    assert result.num_complete == 25 and result.best_value == pytest.approx(best_on_grid)
    assert {tuple(t.params.values()) for t in result.trials} == {
        tuple(p.values()) for p in SPACE.grid_points(5)}
    with pytest.raises(ValueError, match="below the grid's 25 points"):
        st.search(known, SPACE, sampler="grid", grid_points=5, budget=st.Budget(24),
                  study_name="g2", progress=False)


def test_same_seed_same_trials():
    runs = [st.search(known, SPACE, sampler="tpe", budget=st.Budget(12), study_name="s",
                      seed=3, progress=False) for _ in range(2)]
    assert [t.params for t in runs[0].trials] == [t.params for t in runs[1].trials]


@pytest.mark.parametrize("kwargs, match", [
    (dict(sampler="anneal"), "unknown sampler"),
    (dict(sampler="random", pruner="early"), "unknown pruner"),
])
def test_unknown_sampler_or_pruner_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        st.search(known, SPACE, budget=st.Budget(2), study_name="u", progress=False, **kwargs)


def test_bad_budget_raises():
    with pytest.raises(ValueError, match="num_trials"):
        st.Budget(0)


def test_nan_objective_fails_the_trial_not_the_study():
    def sometimes_nan(params, report):
        return math.nan if params["x"] > 0.1 else known(params)

    result = st.search(sometimes_nan, SPACE, sampler="random", budget=st.Budget(20),
                       study_name="n", progress=False)
    assert result.num_failed > 0 and result.num_complete + result.num_failed == 20
    assert math.isfinite(result.best_value) and result.best_params["x"] <= 0.1


def test_sqlite_study_resumes_without_rerunning_finished_trials(tmp_path):
    calls = []

    def counted(params, report):
        calls.append(params)
        return known(params)

    storage = st.storage_for(tmp_path)
    name = st.study_key("resume", SPACE, sampler="random")
    first = st.run_study(counted, SPACE, sampler="random", budget=st.Budget(5), storage=storage,
                         study_name=name, progress=False)
    more = st.run_study(counted, SPACE, sampler="random", budget=st.Budget(8), storage=storage,
                        study_name=name, progress=False)
    again = st.run_study(counted, SPACE, sampler="random", budget=st.Budget(8), storage=storage,
                         study_name=name, progress=False)
    assert len(calls) == 8 and (tmp_path / "optuna.db").exists()
    assert [t.params for t in more.trials[:5]] == [t.params for t in first.trials]
    assert again.trials == more.trials and again.num_complete == 8
