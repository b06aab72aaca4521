"""Large-batch training helpers: the linear scaling rule with gradual warmup, and gradient
accumulation.

Goyal et al. 2017 ("Accurate, Large Minibatch SGD"): when the minibatch grows by `k`, multiply
the learning rate by `k`; start from the small-batch rate and ramp linearly to the scaled one
over the first steps (their "gradual warmup", 5 epochs), because the scaled rate diverges early
in training when the loss surface changes fast.

    lr = linear_scaling_schedule(base_lr=0.1, base_batch_size=256, batch_size=8192,
                                 warmup_steps=500)
    tx = optax.sgd(lr, momentum=0.9)

Gradient accumulation trades steps for memory: `num_microbatches` forward/backward passes on
slices of the batch, one optimizer update with their mean gradient. For a mean loss this is the
big-batch step exactly (up to float summation order).

    tx = accumulate_gradients(optax.adam(1e-3), num_microbatches=4)
    for microbatch in split_microbatches(batch, 4): ...   # one `tx.update` per microbatch
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

PyTree = Any


def scaled_learning_rate(base_lr: float, base_batch_size: int, batch_size: int) -> float:
    """The linear scaling rule: `base_lr * batch_size / base_batch_size`."""
    if base_batch_size <= 0 or batch_size <= 0:
        raise ValueError(
            f"batch sizes must be positive, got base_batch_size={base_batch_size}, "
            f"batch_size={batch_size}"
        )
    return base_lr * batch_size / base_batch_size


def linear_scaling_schedule(
    base_lr: float,
    base_batch_size: int,
    batch_size: int,
    warmup_steps: int,
    after_warmup: optax.Schedule | None = None,
) -> optax.Schedule:
    """Gradual warmup from `base_lr` to the linearly scaled rate, then `after_warmup`.

    Args:
      base_lr: learning rate tuned for `base_batch_size`.
      base_batch_size: the batch size `base_lr` was tuned at.
      batch_size: the batch size actually used (e.g. per-device batch x data-axis size).
      warmup_steps: steps of the linear ramp (0: start at the scaled rate).
      after_warmup: optional multiplier schedule of the steps after warmup (its step 0 is the
        first step after warmup), e.g. `optax.cosine_decay_schedule(1.0, decay_steps)`;
        default: constant 1.

    Returns:
      An optax schedule `step -> learning rate`.
    """
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
    peak = scaled_learning_rate(base_lr, base_batch_size, batch_size)
    after = after_warmup or (lambda step: jnp.ones_like(step, jnp.float32))
    main = lambda step: peak * after(step)
    if warmup_steps == 0:
        return main
    warmup = optax.linear_schedule(base_lr, peak, warmup_steps)
    return optax.join_schedules([warmup, main], [warmup_steps])


def split_microbatches(batch: PyTree, num_microbatches: int) -> PyTree:
    """Reshape every leaf `[B, ...]` to `[num_microbatches, B // num_microbatches, ...]`."""
    sizes = {x.shape[0] for x in jax.tree.leaves(batch)}
    if len(sizes) != 1:
        raise ValueError(f"batch leaves disagree on the leading (batch) dimension: {sorted(sizes)}")
    size = sizes.pop()
    if num_microbatches <= 0 or size % num_microbatches:
        raise ValueError(
            f"batch size {size} is not divisible by num_microbatches={num_microbatches}"
        )
    per = size // num_microbatches
    return jax.tree.map(lambda x: x.reshape(num_microbatches, per, *x.shape[1:]), batch)


def accumulate_gradients(
    tx: optax.GradientTransformation, num_microbatches: int
) -> optax.GradientTransformationExtraArgs:
    """`optax.MultiSteps`: average `num_microbatches` gradients, then apply `tx` once (the
    intermediate calls return zero updates)."""
    if num_microbatches < 1:
        raise ValueError(f"num_microbatches must be >= 1, got {num_microbatches}")
    return optax.MultiSteps(tx, every_k_schedule=num_microbatches).gradient_transformation()


def make_accumulating_train_step(loss_fn, tx: optax.GradientTransformation, num_microbatches: int):
    """A jitted step that scans `accumulate_gradients(tx, k)` over the `k` microbatches of a
    batch: one call = one optimizer update of the full batch, at a microbatch's activation memory.

    Returns:
      `(init, step)`: `opt_state = init(params)`;
      `params, opt_state, loss = step(params, opt_state, batch)` with `loss` the batch mean.
    """
    accumulating = accumulate_gradients(tx, num_microbatches)

    @jax.jit
    def step(params, opt_state, batch):
        def one(carry, microbatch):
            params, opt_state = carry
            loss, grads = jax.value_and_grad(loss_fn)(params, microbatch)
            updates, opt_state = accumulating.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        microbatches = split_microbatches(batch, num_microbatches)
        (params, opt_state), losses = jax.lax.scan(one, (params, opt_state), microbatches)
        return params, opt_state, jnp.mean(losses)

    return accumulating.init, step
