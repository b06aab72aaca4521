"""fANOVA ranks a planted dominant hyperparameter first; the sensitivity plots are PNGs."""

from experiments.automl import importance
from experiments.automl import study as st
from experiments.automl.space import Categorical, Float, SearchSpace

SPACE = SearchSpace({"x": Float(0.0, 1.0), "y": Float(1e-3, 1.0, log=True),
                     "c": Categorical(("a", "b"))})


def planted(params, report):
    return 10.0 * (params["x"] - 0.5) ** 2 + 0.1 * params["y"] + 0.05 * (params["c"] == "a")


def test_fanova_ranks_the_dominant_parameter_first_and_plots(tmp_path):
    result = st.search(planted, SPACE, sampler="random", budget=st.Budget(40), study_name="i",
                       progress=False)
    scores = importance.param_importances(result.trials, SPACE)
    assert list(scores)[0] == "x" and scores["x"] > 0.8, scores
    assert abs(sum(scores.values()) - 1.0) < 1e-6
    for path in (importance.plot_importances(scores, tmp_path / "imp.png"),
                 importance.plot_objective_vs_params(result.trials, SPACE, tmp_path / "ov.png")):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_importance_needs_two_distinct_complete_trials():
    result = st.search(lambda p, r: 1.0, SPACE, sampler="random", budget=st.Budget(3),
                       study_name="flat", progress=False)
    assert importance.param_importances(result.trials, SPACE) == {}
