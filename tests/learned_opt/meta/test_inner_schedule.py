"""The inner learning-rate schedule of meta-training (`TruncatedUnroller.inner_schedule`): a
warmup-cosine over each trajectory's own horizon, peaking at the optimizer's nominal step."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from toy import QuadraticFamily

import learned_opt as lo
from learned_opt import meta
from learned_opt.policy import horizon_schedule


def test_horizon_schedule_is_optaxs_warmup_cosine_with_a_traced_horizon():
    horizon, peak = 200, 3e-3
    expected = optax.warmup_cosine_decay_schedule(0.0, peak, warmup_steps=10,
                                                  decay_steps=horizon)
    rate = jax.jit(lambda h, c: horizon_schedule("warmup_cosine", peak, h)(c))
    counts = np.arange(0, horizon + 5)
    got = np.asarray(jax.vmap(lambda c: rate(jnp.int32(horizon), c))(counts))
    np.testing.assert_allclose(got, [float(expected(c)) for c in counts], rtol=1e-5, atol=1e-9)
    assert float(horizon_schedule("constant", peak, horizon)(17)) == peak
    with pytest.raises(ValueError, match="valid choices"):
        horizon_schedule("cosine", peak, horizon)


def test_a_scheduled_unroll_starts_from_a_zero_step_and_differs_from_the_constant_one():
    family, lopt = QuadraticFamily(dim=4), lo.get_lopt("norm_mlp", orthogonalize=False)
    theta = lopt.init(jax.random.key(0))
    make = lambda name: meta.TruncatedUnroller(
        family, family.sample_group(None), lopt, unroll_length=1,
        schedule=meta.ConstantSchedule(40), inner_schedule=name)
    constant, scheduled = make("constant"), make("warmup_cosine")
    state = constant.new_trajectory(jax.random.key(1), theta, num_particles=1)
    start, thetas = state.inner.params["x"], jax.tree.map(lambda x: x[None], theta)
    _, after_constant, _ = jax.jit(constant.unroll)(thetas, state)
    _, after_scheduled, _ = jax.jit(scheduled.unroll)(thetas, state)
    assert not np.allclose(after_constant.inner.params["x"], start)
    np.testing.assert_array_equal(after_scheduled.inner.params["x"], start)  # lr(0) = 0
    with pytest.raises(ValueError, match="unknown inner_schedule"):
        make("linear")
