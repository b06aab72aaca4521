"""Behavioural checks flag fragile models and pass robust ones."""

import numpy as np
import pytest
from scipy import special

from experiments.evaluation import behavioural


def _inputs(n=200, seed=0):
    rng = np.random.default_rng(seed)
    x = np.empty((n, 8), np.float32)
    x[:, 0] = rng.normal(scale=0.05, size=n)  # a feature near the decision boundary
    x[:, 1:] = 3 * rng.choice([-1, 1], size=(n, 1)) + rng.normal(scale=0.3, size=(n, 7))
    return x


def _two_class(score):
    return special.softmax(np.stack([score, -score], axis=1), axis=1)


def fragile(x):  # depends on the one noisy input
    return _two_class(10 * x[:, 0])


def robust(x):  # depends on the mean of the seven large inputs
    return _two_class(x[:, 1:].mean(axis=1))


def test_perturbation_check_flags_a_model_that_depends_on_one_noisy_input():
    x = _inputs()
    flagged = behavioural.perturbation_check(fragile, x, noise_scale=0.05, seed=0)
    assert flagged.pass_rate < 0.8 and not flagged.passed
    assert len(flagged.failing_examples) == round((1 - flagged.pass_rate) * len(x))
    fine = behavioural.perturbation_check(robust, x, noise_scale=0.05, seed=0)
    assert fine.pass_rate == 1.0 and fine.passed
    assert behavioural.perturbation_check(fragile, x, seed=4) == behavioural.perturbation_check(
        fragile, x, seed=4)


def test_invariance_to_a_small_shift_of_a_signal():
    rng = np.random.default_rng(0)
    signals = rng.normal(size=(100, 40, 1)).astype(np.float32)
    signals[:, 10:14] += 3 * rng.choice([-1, 1], size=(100, 1, 1))
    summed = lambda s: _two_class(s.sum(axis=(1, 2)))       # shift-invariant
    positional = lambda s: _two_class(s[:, 12, 0] - s[:, 13, 0] + s[:, 11, 0])  # reads position
    shift = behavioural.shift_signal(2)
    assert behavioural.invariance_check(summed, signals, shift).pass_rate == 1.0
    failing = behavioural.invariance_check(positional, signals, shift)
    assert failing.pass_rate < 0.9 and not failing.passed
    checks = behavioural.default_checks(summed, signals, signal=True)
    assert set(checks) >= {"shift -1", "shift +1"} and checks["shift +1"]["passed"]


def test_directional_expectation():
    x = _inputs()
    louder = lambda inputs, rng: inputs + 0.5  # raises every input: P(class 0) of robust up
    up = behavioural.directional_check(robust, x, louder, target_class=0)
    down = behavioural.directional_check(robust, x, louder, target_class=0,
                                         direction="decrease")
    assert up.pass_rate == 1.0 and down.pass_rate == 0.0
    assert up.as_dict()["passed"] and not down.as_dict()["passed"]
    with pytest.raises(ValueError, match="direction"):
        behavioural.directional_check(robust, x, louder, target_class=0, direction="up")
    with pytest.raises(ValueError, match="target_class"):
        behavioural.directional_check(robust, x, louder, target_class=2)


def test_a_predict_fn_returning_bad_probabilities_is_a_value_error():
    with pytest.raises(ValueError, match="sum to 1"):
        behavioural.perturbation_check(lambda x: np.ones((len(x), 2)), _inputs())
