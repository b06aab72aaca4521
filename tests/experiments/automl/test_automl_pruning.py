"""Pruners stop a planted bad trial early, from its reported intermediate validation losses."""

import pytest
from automl_fakes import TrapTask

from experiments.automl import objectives
from experiments.automl import study as st
from experiments.automl.pruners import make_pruner
from experiments.automl.space import Float, SearchSpace

SPACE = SearchSpace({"x": Float(0.0, 1.0)})
STEPS = 9


def planted(bad_trials):
    """Trial i reports a decaying curve; the trials in `bad_trials` sit 10 higher."""
    calls = []

    def objective(params, report):
        index = len(calls)
        calls.append(index)
        offset = 10.0 if index in bad_trials else 0.0
        value = None
        for step in range(1, STEPS + 1):
            value = offset + 1.0 / step + 0.01 * params["x"]
            report(step, value)
        return value

    return objective


def test_median_pruner_stops_the_planted_bad_trial_at_once():
    result = st.search(planted({4}), SPACE, sampler="random", budget=st.Budget(5),
                       study_name="m", pruner=make_pruner("median", startup_trials=3),
                       progress=False)
    states = [t.state for t in result.trials]
    assert states[:3] == ["COMPLETE"] * 3 and states[4] == "PRUNED"
    assert list(result.trials[4].intermediate) == [1]  # stopped after its first report
    assert result.num_pruned == 1 and result.best_value < 1.0


@pytest.mark.parametrize("name", ["successive_halving", "hyperband"])
def test_halving_pruners_stop_bad_trials_early(name):
    bad = {1, 3, 5, 7, 9, 11}
    result = st.search(planted(bad), SPACE, sampler="random", budget=st.Budget(12),
                       study_name=name, pruner=make_pruner(name, reduction_factor=2),
                       progress=False)
    stopped = [t for t in result.trials if t.number in bad and len(t.intermediate) < STEPS]
    assert stopped and all(t.state == "PRUNED" for t in stopped)
    assert result.best_value < 1.0 and result.trials[0].state == "COMPLETE"


def test_training_objective_prunes_on_rungs_and_never_reads_test():
    task = TrapTask()
    objective = objectives.TrainingObjective(task, "sgd", num_steps=40, eval_every=10,
                                             seeds=(0,), last_k=1, rungs=(0.5, 1.0))
    # Planted: three good learning rates, then one that barely trains.
    learning_rates = iter([0.5, 0.4, 0.6, 1e-5])

    def planted_lr(params, report):
        return objective({"learning_rate": next(learning_rates)}, report)

    result = st.search(planted_lr, SPACE, sampler="random", budget=st.Budget(4),
                       study_name="rungs", pruner=make_pruner("median", startup_trials=3),
                       progress=False)
    assert [t.state for t in result.trials] == ["COMPLETE"] * 3 + ["PRUNED"]
    assert list(result.trials[0].intermediate) == [1, 2, 3, 4]
    assert result.trials[0].attrs["cost_steps"] == 20 + 40
    assert max(result.trials[3].intermediate) <= 2  # stopped within the first rung
    assert task.requested_splits == {"train", "valid"}


def test_bad_rungs_raise():
    with pytest.raises(ValueError, match="rungs"):
        objectives.TrainingObjective(TrapTask(), num_steps=40, eval_every=10, rungs=(0.5,))
