"""Power-law fits recover planted exponents; crossings of planted curves, with intervals."""

import jax
import numpy as np
import pytest

from experiments.modeldev import curves


def test_power_law_fit_recovers_planted_exponent():
    x = np.asarray([32, 64, 128, 256, 512, 1024, 2048], float)
    rng = np.random.default_rng(0)
    y = curves.power_law(x, 5.0, 0.6, 0.2) + rng.normal(0, 0.002, size=x.shape)
    fit = curves.fit_power_law(x, y, sigma=np.full_like(x, 0.002))
    assert fit.exponent == pytest.approx(0.6, abs=0.05)
    assert fit.asymptote == pytest.approx(0.2, abs=0.02)
    assert abs(fit.exponent - 0.6) < 4 * fit.exponent_stderr + 1e-3
    out = curves.extrapolate(fit, [8192], seed=0)
    truth = curves.power_law(8192, 5.0, 0.6, 0.2)
    assert out["low"][0] <= truth <= out["high"][0]
    assert out["high"][0] - out["low"][0] < 0.05


def test_power_law_fit_other_exponent_and_bad_input():
    x = np.geomspace(10, 1e4, 8)
    fit = curves.fit_power_law(x, curves.power_law(x, 2.0, 1.2, 0.0))
    assert fit.exponent == pytest.approx(1.2, abs=1e-3)
    with pytest.raises(ValueError, match="positive"):
        curves.fit_power_law([0, 1, 2], [1, 2, 3])


def test_crossing_of_planted_curves():
    x = np.asarray([1 / 32, 1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0])
    # a is better at small x, b better at large x; they cross at x = 1/8 * 2 = 0.25 in log x
    a = 1.0 + 0.0 * np.log2(x)
    b = 1.0 - 0.1 * (np.log2(x) - np.log2(0.25))
    np.testing.assert_allclose(curves.find_crossings(x, a, b), [0.25])
    rng = np.random.default_rng(0)
    a_SX = a + rng.normal(0, 0.01, (5, len(x)))
    b_SX = b + rng.normal(0, 0.01, (5, len(x)))
    out = curves.crossing_interval(x, a_SX, b_SX, num_resamples=300, seed=0)
    assert out["low"] <= 0.25 <= out["high"]
    assert out["crossing"] == pytest.approx(0.25, rel=0.2)
    assert out["fraction_crossing"] == 1.0 and out["sign_before"] == "a<b"
    # never-crossing curves: no crossing, NaN interval
    none = curves.crossing_interval(x, a_SX, a_SX + 1.0, num_resamples=50)
    assert none["crossing"] is None and none["fraction_crossing"] == 0.0


def test_subset_sizes_and_subset_task():
    from modeldev_fakes import id_task

    from experiments.modeldev import members

    assert curves.subset_sizes(100, [1 / 32, 0.5, 1]) == [3, 50, 100]
    with pytest.raises(ValueError, match="fractions"):
        curves.subset_sizes(100, [0.0])
    task = id_task()
    order = np.arange(40)[::-1]
    subset = members.ResampledTask(task, order, num_used=5)     # the first 5 of the order
    rows = np.asarray(subset.sample_batch(jax.random.key(0))["x"][:, 0]).astype(int)
    assert set(rows) <= {39, 38, 37, 36, 35}


@pytest.mark.parametrize("num_steps, expected", [(400, 100), (50, 10), (7, 1), (2, 1)])
def test_default_tuning_evaluation_divides_every_step_budget(num_steps, expected):
    from experiments.modeldev import optimizers

    spec = optimizers.tuning_spec("generalization", num_steps=num_steps, seeds=(0,),
                                  grid_points=2)
    assert spec.eval_every == expected and num_steps % spec.eval_every == 0
