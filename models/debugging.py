"""Training sanity checks: "overfit one batch" and a short Adam run, sharing one compiled scan.

Before trusting an optimizer comparison on a task, check that the task can be learned at all:
a model that cannot drive the loss on one fixed batch to near zero has a bug (wrong labels,
broken init, detached parameters), whatever optimizer is used.

    result = overfit_one_batch(models.get_task("digits_mlp"), jax.random.key(0))
    assert result.final_loss < 0.05 * result.initial_loss
    result = train_with_adam(task, jax.random.key(0), steps=300, learning_rate=1e-3)
    result.initial_loss, result.final_loss      # on one fixed valid batch

Both run Adam in one `lax.scan`; overfitting feeds the same batch key at every step. The
compiled scan is cached per (task, steps), and the learning rate is an argument, so checking a
task both ways compiles once.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax


class FitResult(NamedTuple):
    initial_loss: float  # loss of the initial parameters on the evaluation batch
    final_loss: float  # loss of the trained parameters on the evaluation batch
    train_losses: jax.Array  # (steps,) training loss before each update
    params: object


def overfit_one_batch(
    task, key: jax.Array, *, steps: int = 200, learning_rate: float = 1e-2
) -> FitResult:
    """Adam on one fixed train batch; a healthy model reaches near-zero loss on that batch.

    Args:
      task: anything with `init`, `sample_batch`, `loss`.
      key: typed key for the init and the batch.
      steps: optimizer steps (one jitted scan).
      learning_rate: Adam learning rate.

    Returns:
      FitResult whose losses are measured on the batch trained on.
    """
    init_key, batch_key = jax.random.split(key)
    batch_keys = jnp.broadcast_to(batch_key, (steps,))
    batch = task.sample_batch(batch_key, "train")
    return _run(task, init_key, batch_keys, learning_rate, batch)


def train_with_adam(
    task, key: jax.Array, *, steps: int = 300, learning_rate: float = 1e-3
) -> FitResult:
    """Adam on fresh train batches; losses measured on one fixed valid batch (not trained on)."""
    init_key, batch_key, valid_key = jax.random.split(key, 3)
    batch_keys = jax.random.split(batch_key, steps)
    return _run(task, init_key, batch_keys, learning_rate, task.sample_batch(valid_key, "valid"))


def _run(task, init_key, batch_keys, learning_rate, eval_batch) -> FitResult:
    run = _compiled_scan(task, batch_keys.shape[0])
    params, train_losses, before, after = run(init_key, batch_keys, learning_rate, eval_batch)
    return FitResult(float(before), float(after), train_losses, params)


@functools.lru_cache(maxsize=32)
def _compiled_scan(task, steps: int):
    del steps  # part of the cache key only: the scan length comes from batch_keys

    @jax.jit
    def run(init_key, batch_keys, learning_rate, eval_batch):
        optimizer = optax.adam(learning_rate)
        params = task.init(init_key)

        def step(carry, batch_key):
            params, opt_state = carry
            batch = task.sample_batch(batch_key, "train")
            loss, grads = jax.value_and_grad(task.loss)(params, batch)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        initial = task.loss(params, eval_batch)
        (params, _), losses = jax.lax.scan(step, (params, optimizer.init(params)), batch_keys)
        return params, losses, initial, task.loss(params, eval_batch)

    return run
