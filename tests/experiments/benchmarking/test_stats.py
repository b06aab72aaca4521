"""Aggregates: bootstrap intervals against a direct computation, performance profiles against
hand-worked step functions, schedule-free evaluated at its averaged iterate."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib
import pytest
import scipy.stats
from bench_fakes import FakeTask

from experiments.benchmarking import stats, summary
from experiments.benchmarking.eval_params import with_eval_params
from learned_opt import training

SAMPLE = np.array([0.3, 1.2, 2.0, 2.2, 3.5, 4.1, 5.0, 7.7, 9.0, 12.0])


@pytest.mark.parametrize("statistic, function", [
    ("median", lambda x: np.median(x, axis=-1)),
    ("iqm", lambda x: scipy.stats.trim_mean(x, 0.25, axis=-1))])
def test_bootstrap_interval_matches_a_direct_percentile_bootstrap(statistic, function):
    low, high = stats.bootstrap_ci(SAMPLE, statistic, num_resamples=4000, seed=3)
    # The percentile bootstrap written out: resample with replacement, take the 2.5% / 97.5%
    # percentiles of the statistic.
    index = np.random.default_rng(3).integers(0, SAMPLE.size, (4000, SAMPLE.size))
    expected = np.percentile(function(SAMPLE[index]), [2.5, 97.5])
    assert (low, high) == pytest.approx(tuple(expected))
    assert low < function(SAMPLE) < high


def test_describe_counts_infinities_and_degenerate_samples():
    assert stats.iqm(np.array([0.0, 1.0, 2.0, 3.0, 100.0, 5.0, 6.0, 7.0])) == pytest.approx(
        np.mean([2.0, 3.0, 5.0, 6.0]))
    out = stats.describe([1.0, 2.0, 3.0, np.inf])  # one diverged seed
    assert out["median"] == 2.5 and out["iqm"] == 2.5 and out["median_ci"][1] is None
    assert stats.bootstrap_ci([2.0, 2.0, 2.0], "median") == (2.0, 2.0)
    assert stats.bootstrap_ci([], "iqm") == (None, None)
    with pytest.raises(ValueError, match="NaN"):
        stats.bootstrap_ci([1.0, np.nan], "median")
    with pytest.raises(ValueError, match="valid: .*iqm"):
        stats.bootstrap_ci([1.0, 2.0], "mean")


TAUS = [1.0, 1.5, 2.0, 4.0, 10.0]


@pytest.mark.parametrize("costs, expected", [
    # One task: A best, B 2x worse, C 4x worse.
    ([[1.0, 2.0, 4.0]], [[1, 1, 1, 1, 1], [0, 0, 1, 1, 1], [0, 0, 0, 1, 1]]),
    # Two tasks, each won by another optimizer; C failed (inf / NaN) on both.
    ([[1.0, 3.0, np.inf], [2.0, 1.0, np.nan]],
     [[0.5, 0.5, 1, 1, 1], [0.5, 0.5, 0.5, 1, 1], [0, 0, 0, 0, 0]]),
    # A tie, a zero best (matched only by zero), a task nobody solved.
    ([[2.0, 2.0, 3.0], [0.0, 0.0, 1.0], [np.inf, np.inf, np.inf]],
     [[2 / 3] * 5, [2 / 3] * 5, [0, 1 / 3, 1 / 3, 1 / 3, 1 / 3]]),
])
def test_performance_profile_is_the_expected_step_function(costs, expected):
    np.testing.assert_allclose(stats.performance_profile(costs, TAUS), expected)
    table = {"labels": ["A", "B", "C"], "tasks": [str(i) for i in range(len(costs))],
             "costs": [[None if not np.isfinite(v) else v for v in row] for row in costs]}
    np.testing.assert_allclose(summary.profile_curve(table, TAUS), expected)


def test_aggregate_counts_wins_misses_and_divergences():
    def run(speedups, normalized, statuses, won, diverged=(False, False)):
        return {"diverged": list(diverged), "vs": {"adam": {
            "speedup": {"speedup": None if None in speedups else 1.0, "per_seed": speedups},
            "normalized_loss": normalized, "normalized_status": statuses, "won": won}}}

    runs = [run([2.0, 4.0], [-0.5, -0.1], ["ok", "ok"], True),
            run([None, None], [None, 0.3], ["diverged", "ok"], False, (True, False)),
            run([1.0, None], [None, 0.2], ["no_scale", "ok"], False)]
    agg = summary.aggregate(runs, "adam", num_resamples=200)
    assert (agg["tasks_won"], agg["num_tasks"], agg["diverged_tasks"]) == (1, 3, 1)
    assert agg["reached_target"] == 1 and agg["num_seeds"] == [2] and not agg["single_seed"]
    assert agg["speedup"]["n"] == 6  # never reached counts as 0
    assert agg["speedup"]["median"] == pytest.approx(0.5)
    assert agg["normalized_loss"]["n"] == 5 and agg["normalized_loss"]["n_no_scale"] == 1
    assert agg["normalized_loss"]["median"] == pytest.approx(0.2)


def test_schedule_free_is_evaluated_at_its_averaged_iterate():
    task = FakeTask()
    make_tx = lambda args: optax.contrib.schedule_free_adamw(0.05)  # noqa: E731
    run_task, run_tx = with_eval_params(task, make_tx, optax.contrib.schedule_free_eval_params)
    run = training.make_run_fn(run_task, run_tx, num_steps=20, eval_every=10,
                               eval_splits=("valid",), full_split_eval=True)
    curves = jax.device_get(run({}, training.seed_keys([4])))
    # The same training by hand: schedule-free at y, evaluated at x.
    init_key, train_key, _ = jax.random.split(jax.random.key(4), 3)
    params = task.init(init_key)
    tx = make_tx({})
    state = tx.init(params)
    losses = []
    for step in range(20):
        batch = task.sample_batch(jax.random.fold_in(train_key, step), "train")
        loss, grads = jax.value_and_grad(task.loss)(params, batch)
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        losses.append(float(loss))
    np.testing.assert_allclose(curves.train_loss[0], losses, rtol=1e-5, atol=1e-6)
    valid = task.full_split("valid")
    at_x = task.loss(optax.contrib.schedule_free_eval_params(state, params), valid)
    at_y = task.loss(params, valid)
    assert curves.evals["valid"]["loss"][0, -1] == pytest.approx(float(at_x), rel=1e-5)
    assert abs(float(at_x) - float(at_y)) > 1e-4  # the two points differ: it matters
    assert jnp.isfinite(at_x)
