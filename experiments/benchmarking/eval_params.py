"""Evaluate an optimizer at parameters other than the ones it trains (schedule-free's average).

Schedule-free AdamW takes its gradients at one point `y` of its iterate sequence and is meant to
be evaluated at another, `x = optax.contrib.schedule_free_eval_params(opt_state, y)`. The shared
training loop (`learned_opt.training`) evaluates the parameters it carries, so this module
carries both: the wrapped task's parameters are `{"train": y, "eval": x}`, its loss reads only
`train` (so gradients and the per-step training-loss curve are schedule-free's own, at `y`), its
metrics read only `eval` (every in-loop and snapshot evaluation, every split, sees `x`), and the
wrapped optimizer steps `train` and writes the new `x` into `eval`.

    task2, make_tx2 = with_eval_params(task, make_tx, optax.contrib.schedule_free_eval_params)
    run = training.make_run_fn(task2, make_tx2, num_steps=..., eval_every=...)
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import optax

from learned_opt.tasks import task_metrics


class EvalParamsTask:
    """`task` over `{"train": params, "eval": params}`: loss at "train", metrics at "eval"."""

    def __init__(self, task):
        self.task = task

    def __getattr__(self, name):  # sample_batch, full_split, dataset_info, name, ...
        return getattr(self.task, name)

    def init(self, key):
        params = self.task.init(key)
        return {"train": params, "eval": params}

    def loss(self, params, batch):
        return self.task.loss(params["train"], batch)

    def metrics(self, params, batch):
        return task_metrics(self.task, params["eval"], batch)


def eval_params_transform(tx: optax.GradientTransformation,
                          eval_params: Callable) -> optax.GradientTransformationExtraArgs:
    """`tx` on the "train" half; the "eval" half is moved to `eval_params(state, new params)`."""
    tx = optax.with_extra_args_support(tx)

    def init(params):
        return tx.init(params["train"])

    def update(grads, state, params=None, **extra_args):
        updates, state = tx.update(grads["train"], state, params["train"], **extra_args)
        target = eval_params(state, optax.apply_updates(params["train"], updates))
        return {"train": updates,
                "eval": jax.tree.map(lambda new, old: new - old, target, params["eval"])}, state

    return optax.GradientTransformationExtraArgs(init, update)


def with_eval_params(task, make_tx: Callable, eval_params: Callable | None):
    """(task, make_tx) ready for the training loop; unchanged when `eval_params` is None."""
    if eval_params is None:
        return task, make_tx
    return EvalParamsTask(task), lambda args: eval_params_transform(make_tx(args), eval_params)
