"""Training sanity checks: "overfit one batch" and a short Adam run, on the library's training loop.

Before trusting an optimizer comparison on a task, check that the task can be learned at all:
a model that cannot drive the loss on one fixed batch to near zero has a bug (wrong labels,
broken init, detached parameters), whatever optimizer is used.

    result = overfit_one_batch(models.get_task("digits_mlp"), jax.random.key(0))
    assert result.final_loss < 0.05 * result.initial_loss
    result = train_with_adam(task, jax.random.key(0), steps=300, learning_rate=1e-3)
    result.initial_loss, result.final_loss      # on the valid split, never trained on

Both train Adam through `learned_opt.training.make_run_fn` (one jitted `lax.scan`); overfitting
uses its `fixed_train_batch` mode. The compiled run is cached per (task, steps, mode) and the
learning rate is an argument, so trying another learning rate does not recompile.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from learned_opt import training


class FitResult(NamedTuple):
    initial_loss: float  # loss of the initial parameters on the evaluation data
    final_loss: float  # loss of the trained parameters on the evaluation data
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
    return _fit(task, key, steps, learning_rate, overfit=True)


def train_with_adam(
    task, key: jax.Array, *, steps: int = 300, learning_rate: float = 1e-3
) -> FitResult:
    """Adam on fresh train batches; losses measured on the valid split (not trained on): the
    whole split where the task has `full_split`, else one sampled valid batch per evaluation."""
    return _fit(task, key, steps, learning_rate, overfit=False)


def _fit(task, key, steps: int, learning_rate: float, *, overfit: bool) -> FitResult:
    if steps <= 0:
        raise ValueError(f"steps must be positive, got {steps}")
    split = "train" if overfit else "valid"
    run = _compiled_run(task, steps, overfit)
    curves = run(jnp.float32(learning_rate), key[None])
    losses = curves.evals[split]["loss"][0]
    params = jax.tree.map(lambda leaf: leaf[0, -1], curves.snapshots)
    return FitResult(float(losses[0]), float(losses[-1]), curves.train_loss[0], params)


@functools.lru_cache(maxsize=32)
def _compiled_run(task, steps: int, overfit: bool):
    split = "train" if overfit else "valid"
    return training.make_run_fn(
        task, optax.adam, num_steps=steps, eval_every=steps, eval_splits=(split,),
        full_split_eval=not overfit, keep_snapshots=True, fixed_train_batch=overfit)
