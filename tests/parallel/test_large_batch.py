"""Linear scaling + warmup schedule values, and gradient accumulation == big-batch step."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from parallel import data_parallel as dp
from parallel import large_batch as lb


def loss_fn(params, batch):
    return jnp.mean((batch["x"] @ params["w"] + params["b"] - batch["y"]) ** 2)


def test_linear_scaling_rule_and_gradual_warmup():
    assert lb.scaled_learning_rate(0.1, 256, 8192) == pytest.approx(3.2)
    schedule = lb.linear_scaling_schedule(0.1, 256, 1024, warmup_steps=10)
    values = np.array([schedule(step) for step in range(15)])
    # Starts at the small-batch rate, rises linearly to 4x, then stays there.
    np.testing.assert_allclose(values[:11], np.linspace(0.1, 0.4, 11), rtol=1e-6)
    np.testing.assert_allclose(values[10:], 0.4, rtol=1e-6)
    cosine = lb.linear_scaling_schedule(
        0.1, 256, 1024, warmup_steps=10, after_warmup=optax.cosine_decay_schedule(1.0, 20)
    )
    np.testing.assert_allclose([cosine(10), cosine(20), cosine(30)], [0.4, 0.2, 0.0], atol=1e-6)
    assert float(lb.linear_scaling_schedule(0.1, 10, 20, warmup_steps=0)(0)) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="batch sizes must be positive"):
        lb.scaled_learning_rate(0.1, 0, 8)


@pytest.mark.parametrize("make_tx", [lambda: optax.sgd(0.1), lambda: optax.adam(1e-2)])
def test_accumulated_microbatches_equal_the_big_batch_step(make_tx):
    key_w, key_x, key_y = jax.random.split(jax.random.key(0), 3)
    params = {"w": jax.random.normal(key_w, (5, 3)), "b": jnp.zeros(3)}
    tx = make_tx()
    big_step = dp.make_train_step(loss_fn, tx)
    init, accumulating_step = lb.make_accumulating_train_step(loss_fn, tx, num_microbatches=4)
    ref_params, ref_state = params, tx.init(params)
    acc_params, acc_state = params, init(params)
    for step in range(3):
        batch = {"x": jax.random.normal(jax.random.fold_in(key_x, step), (32, 5)),
                 "y": jax.random.normal(jax.random.fold_in(key_y, step), (32, 3))}
        ref_params, ref_state, ref_loss = big_step(ref_params, ref_state, batch)
        acc_params, acc_state, acc_loss = accumulating_step(acc_params, acc_state, batch)
        np.testing.assert_allclose(acc_loss, ref_loss, rtol=1e-6)
        jax.tree.map(lambda a, r: np.testing.assert_allclose(a, r, rtol=1e-5, atol=1e-6),
                     acc_params, ref_params)


def test_microbatch_split_errors_name_the_sizes():
    batch = {"x": jnp.ones((10, 2))}
    assert lb.split_microbatches(batch, 5)["x"].shape == (5, 2, 2)
    with pytest.raises(ValueError, match="batch size 10 is not divisible by num_microbatches=4"):
        lb.split_microbatches(batch, 4)
    with pytest.raises(ValueError, match="num_microbatches must be >= 1"):
        lb.accumulate_gradients(optax.sgd(0.1), 0)
