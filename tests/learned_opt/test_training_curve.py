"""`training.train_loss_curve` (the light loop of checkpoint selection and stability runs) and
the verdicts built on it in `experiments.meta_select` / `experiments.meta_stability`."""

import math

import jax
import numpy as np
import optax
import pytest

import models
from experiments import meta_select, meta_stability
from learned_opt import training


def test_train_loss_curve_matches_a_python_loop():
    task = models.get_task("logistic")
    tx, key, num_steps = optax.adam(1e-2), jax.random.key(3), 12
    losses = jax.jit(lambda k: training.train_loss_curve(task, tx, k, num_steps))(key)
    params = task.init(jax.random.fold_in(key, 0))
    state = tx.init(params)
    expected = []
    for k in range(num_steps):
        batch = task.sample_batch(jax.random.fold_in(jax.random.fold_in(key, 1), k), "train")
        loss, grads = jax.value_and_grad(task.loss)(params, batch)
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        expected.append(float(loss))
    np.testing.assert_allclose(np.asarray(losses), expected, rtol=1e-5)
    assert expected[-1] < expected[0]


def test_stability_verdict_flags_a_blow_up_after_the_minimum_and_non_finite_losses():
    falling = np.geomspace(1.0, 1e-3, 200)
    assert not meta_stability.verdict(falling, window=10, blowup_factor=3.0)["diverged"]
    rebound = np.concatenate([falling, np.full(50, 0.1)])  # 100x above its minimum
    result = meta_stability.verdict(rebound, window=10, blowup_factor=3.0)
    assert result["diverged"] and result["finite"]
    assert result["max_smoothed_over_running_min"] > 3.0
    # Converged to exactly 0, then a spike far below the initial loss: not a blow-up (the
    # minimum is floored at 1e-3 x the initial loss); a spike to 1% of it is.
    converged = np.concatenate([falling, np.zeros(50)])
    small_spike, large_spike = converged.copy(), converged.copy()
    small_spike[220:230], large_spike[220:230] = 1e-4, 1e-1
    assert not meta_stability.verdict(small_spike, window=10, blowup_factor=3.0)["diverged"]
    assert meta_stability.verdict(large_spike, window=10, blowup_factor=3.0)["diverged"]
    broken = falling.copy()
    broken[150] = np.nan
    assert meta_stability.verdict(broken, window=10, blowup_factor=3.0)["diverged"]


def test_selection_score_is_the_log_ratio_and_penalises_divergence():
    losses = np.full(30, 0.5)
    assert meta_select.score(losses, reference=1.0, window=10) == pytest.approx(math.log(0.5))
    diverged = losses.copy()
    diverged[-1] = np.inf
    assert meta_select.score(diverged, reference=1.0, window=10) == pytest.approx(
        math.log(0.5) + meta_select.DIVERGED_PENALTY)
