"""Asynchronous SGD simulation: known answers on quadratics, schedules from worker timings."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from parallel import async_sgd
from parallel import data_parallel as dp


def quadratic(w, batch):
    return 0.5 * jnp.sum(w**2)  # gradient w, curvature 1: the lr is the recurrence gain


def delayed_recurrence(gain, staleness, num_updates, scale=None):
    """Reference: w[t+1] = w[t] - scale(tau) * gain * w[t - tau], in float64 NumPy."""
    w = [1.0]
    for t in range(num_updates):
        tau = min(staleness, t)
        factor = 1.0 if scale is None else scale(tau)
        w.append(w[t] - factor * gain * w[t - tau])
    return np.array(w[1:])


def linear_regression(params, batch):
    return jnp.mean((batch["x"] @ params["w"] - batch["y"]) ** 2)


@pytest.fixture(scope="module")
def regression_batches():
    key_x, key_y = jax.random.split(jax.random.key(0))
    x = jax.random.normal(key_x, (20, 16, 3))
    y = x @ jnp.array([1.0, -2.0, 0.5]) + 0.1 * jax.random.normal(key_y, (20, 16))
    return {"x": x, "y": y}


@pytest.mark.parametrize("make_tx", [lambda: optax.sgd(0.05), lambda: optax.adam(0.05)])
def test_zero_staleness_is_synchronous_sgd(make_tx, regression_batches):
    params = {"w": jnp.zeros(3)}
    tx = make_tx()
    step = dp.make_train_step(linear_regression, tx)
    ref_params, opt_state, ref_losses = params, tx.init(params), []
    for t in range(20):
        ref_params, opt_state, loss = step(ref_params, opt_state,
                                           jax.tree.map(lambda x, t=t: x[t], regression_batches))
        ref_losses.append(loss)
    result = async_sgd.run_async_sgd(
        linear_regression, tx, params, regression_batches, np.zeros(20, np.int32)
    )
    np.testing.assert_allclose(result.losses, ref_losses, rtol=1e-6)
    np.testing.assert_allclose(result.params["w"], ref_params["w"], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("staleness", [1, 3])
def test_fixed_staleness_follows_the_delayed_recurrence(staleness):
    num_updates, gain = 30, 0.3
    result = async_sgd.run_async_sgd(
        quadratic, optax.sgd(gain), jnp.ones(()), jnp.zeros(num_updates),
        async_sgd.fixed_schedule(num_updates, staleness).staleness,
    )
    w_after = np.concatenate([[1.0], delayed_recurrence(gain, staleness, num_updates)])
    # losses[t] is the loss at the stale params update t used: 0.5 * w[t - tau]^2.
    seen = [w_after[t - min(staleness, t)] for t in range(num_updates)]
    np.testing.assert_allclose(result.losses, 0.5 * np.square(seen), rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(result.params, w_after[-1], rtol=1e-5, atol=1e-9)


def test_staleness_shrinks_the_stable_step_size_as_theory_says():
    # w[t+1] = w[t] - k w[t-tau] is stable iff 0 < k < 2 sin(pi / (2 (2 tau + 1))) (Levin & May
    # 1965): 2 for sync SGD, 1 at tau=1, 0.618 at tau=2. Just below converges, just above diverges.
    def final_magnitude(gain, tau, scaling="none"):
        result = async_sgd.run_async_sgd(
            quadratic, optax.sgd(gain), jnp.ones(()), jnp.zeros(300),
            async_sgd.fixed_schedule(300, tau).staleness, staleness_scaling=scaling,
        )
        return float(jnp.abs(result.params))

    for tau in (0, 1, 2):
        limit = 2 * np.sin(np.pi / (2 * (2 * tau + 1)))
        assert final_magnitude(0.9 * limit, tau) < 1e-2, tau
        assert final_magnitude(1.1 * limit, tau) > 1e2, tau
    # Staleness-aware scaling (lr / tau) brings a step that diverges at tau=2 back inside.
    assert final_magnitude(1.0, 2) > 1e2
    assert final_magnitude(1.0, 2, scaling="inverse") < 1e-2


def test_inverse_scaling_matches_the_scaled_recurrence():
    result = async_sgd.run_async_sgd(
        quadratic, optax.sgd(0.4), jnp.ones(()), jnp.zeros(25),
        async_sgd.fixed_schedule(25, 2).staleness, staleness_scaling="inverse",
    )
    expected = delayed_recurrence(0.4, 2, 25, scale=lambda tau: 1.0 / max(tau, 1))
    np.testing.assert_allclose(result.params, expected[-1], rtol=1e-5, atol=1e-9)


def test_worker_schedule_staleness_and_clock():
    # Four equal workers: after the first round every update is 3 versions stale, 4 per second.
    even = async_sgd.worker_schedule(12, [1.0, 1.0, 1.0, 1.0])
    np.testing.assert_array_equal(even.staleness, [0, 1, 2, 3] + [3] * 8)
    np.testing.assert_array_equal(even.wall_clock, np.repeat([1.0, 2.0, 3.0], 4))
    # A 5x straggler: the three fast workers land 3 updates per second; the straggler's first
    # gradient arrives at t=5 together with the fast workers' fifth ones (ties go to the lower
    # worker id), after 15 updates, so it is 15 versions stale.
    slow = async_sgd.worker_schedule(16, [1.0, 1.0, 1.0, 5.0])
    straggler = np.flatnonzero(slow.worker == 3)
    assert straggler[0] == 15 and slow.staleness[15] == 15 and slow.wall_clock[15] == 5.0
    np.testing.assert_array_equal(slow.staleness[3:12], 2)
    # Synchronous SGD waits for the straggler every round.
    sync = async_sgd.sync_schedule(3, [1.0, 1.0, 1.0, 5.0])
    np.testing.assert_array_equal(sync.wall_clock, [5.0, 10.0, 15.0])
    assert np.all(sync.staleness == 0)
    rand = async_sgd.random_schedule(1000, 4, seed=0)
    assert rand.staleness.max() == 4 and np.all(rand.staleness <= np.arange(1000))
    np.testing.assert_allclose(np.bincount(rand.staleness[10:]) / 990, 0.2, atol=0.04)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="staleness_scaling must be one of"):
        async_sgd.run_async_sgd(quadratic, optax.sgd(0.1), jnp.ones(()), jnp.zeros(3),
                                np.zeros(3, np.int32), staleness_scaling="sqrt")
    with pytest.raises(ValueError, match=r"0 <= staleness\[t\] <= t"):
        async_sgd.run_async_sgd(quadratic, optax.sgd(0.1), jnp.ones(()), jnp.zeros(3),
                                np.array([1, 0, 0]))
    with pytest.raises(ValueError, match="leading dimension num_updates=3"):
        async_sgd.run_async_sgd(quadratic, optax.sgd(0.1), jnp.ones(()), jnp.zeros(4),
                                np.zeros(3, np.int32))
    with pytest.raises(ValueError, match="positive numbers"):
        async_sgd.worker_schedule(5, [1.0, 0.0])
