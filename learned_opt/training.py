"""The training loop: loss curves of one optimizer on one task, one jitted `lax.scan` over seeds.

"Train this task with this optax transform for N steps, evaluating every K" is written once,
here; tuning, the benchmark, `models.debugging` and the measurement scripts train through it.
Tuning and the benchmark both train through this one loop, so a baseline is tuned under exactly
the conditions it is later benchmarked in. The split that evaluation reads is an explicit,
static argument: tuning passes `("valid",)` and can never touch "test"; only the benchmark's
final runs ask for "test".

    run = make_run_fn(task, lambda lr: optax.adam(lr), num_steps=300, eval_every=50,
                      eval_splits=("train", "valid"))
    curves = jax.device_get(run(jnp.float32(1e-3), seed_keys([0, 1, 2])))
    curves.train_loss.shape           # (3, 300): minibatch loss at every step
    curves.evals["valid"]["loss"]     # (3, 7): valid loss at steps 0, 50, ..., 300

`make_tx(tx_args)` builds the optimizer *inside* jit from an array pytree (a learning rate, a
learned optimizer's theta), so trying another learning rate or theta never recompiles.

Seeds: seed `s` fixes the parameter init, the training batches and the evaluation batches. Two
optimizers run with the same seeds therefore see identical data, which makes per-seed
comparisons paired.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from learned_opt.tasks import SPLITS, Task, task_metrics

PyTree = Any


class Curves(NamedTuple):
    """What one run records, with a leading seed axis S on every array.

    train_loss: (S, num_steps) minibatch training loss at each step, before that step's update.
    evals: split -> metric name -> (S, E) values at `eval_steps` (see `make_eval_fn`); metrics
      come from `task.metrics` ("loss", maybe "accuracy").
    eval_steps: (E,) the step each evaluation was taken at: 0, eval_every, ..., num_steps.
    snapshots: the parameters at `eval_steps`, leaves with leading (S, E) axes (None unless
      `keep_snapshots`): other splits can be evaluated later by a separate function, so the
      training loop itself never reads them.
    """

    train_loss: Any
    evals: dict[str, dict[str, Any]]
    eval_steps: Any
    snapshots: Any = None


def seed_keys(seeds: Sequence[int]) -> jax.Array:
    """Typed PRNG keys, one per integer seed, stacked on a leading axis."""
    if len(seeds) == 0:
        raise ValueError("need at least one seed")
    return jax.vmap(jax.random.key)(jnp.asarray(list(seeds), dtype=jnp.uint32))


def eval_steps_of(num_steps: int, eval_every: int) -> np.ndarray:
    """Steps at which `make_run_fn` evaluates: 0, eval_every, ..., num_steps."""
    return np.arange(0, num_steps + 1, eval_every)


def _check_loop_args(num_steps: int, eval_every: int, eval_splits: Sequence[str],
                     eval_batches: int) -> None:
    if num_steps <= 0 or eval_every <= 0:
        raise ValueError(
            f"num_steps and eval_every must be positive, got {num_steps}, {eval_every}")
    if num_steps % eval_every:
        raise ValueError(f"num_steps={num_steps} must be a multiple of eval_every={eval_every}")
    if eval_batches <= 0:
        raise ValueError(f"eval_batches must be positive, got {eval_batches}")
    for split in eval_splits:
        if split not in SPLITS:
            raise ValueError(f"unknown eval split {split!r}; expected some of {SPLITS}")


def _as_extra_args(tx: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
    """Every optimizer is called with `value=loss`; plain optax transforms must accept it."""
    if isinstance(tx, optax.GradientTransformationExtraArgs):
        return tx
    return optax.with_extra_args_support(tx)


def _make_evaluate(task: Task, eval_splits: tuple[str, ...], eval_batches: int,
                   full_split_eval: bool) -> Callable[..., dict]:
    """`evaluate(params, key[, train_batch]) -> {split: {metric: scalar}}`.

    SPLITS[i] uses fold_in(key, i); a given `train_batch` is what "train" is evaluated on.
    """

    def evaluate(params, key, train_batch=None):
        results = {}
        for split in eval_splits:
            if split == "train" and train_batch is not None:
                metrics = task_metrics(task, params, train_batch)
                results[split] = {name: jnp.asarray(v) for name, v in metrics.items()}
                continue
            # Keyed by the split's global index, so a split's batches do not depend on which
            # other splits are evaluated alongside it (tuning and final runs agree on "valid").
            split_key = jax.random.fold_in(key, SPLITS.index(split))
            if split != "train" and full_split_eval and hasattr(task, "full_split"):
                metrics = task_metrics(task, params, task.full_split(split))
                results[split] = {name: jnp.asarray(v) for name, v in metrics.items()}
                continue
            keys = jax.random.split(split_key, eval_batches)

            def metrics_of_batch(batch_key, split=split):
                return task_metrics(task, params, task.sample_batch(batch_key, split))

            metrics = jax.vmap(metrics_of_batch)(keys)
            results[split] = {name: jnp.mean(value, axis=0) for name, value in metrics.items()}
        return results

    return evaluate


def make_eval_fn(
    task: Task,
    eval_splits: Sequence[str],
    *,
    eval_batches: int = 1,
    full_split_eval: bool = False,
) -> Callable[[PyTree, jax.Array], dict]:
    """A jitted `evaluate(snapshots, keys_S) -> {split: {metric: (S, E)}}` over `Curves.snapshots`.

    Uses the same batches as `make_run_fn`'s in-loop evaluation for the same seed keys, so the
    "valid" curve it returns equals the run's own. This is how the benchmark reads "test": after
    training, from a separate function that tuning never calls.
    """
    _check_loop_args(1, 1, eval_splits, eval_batches)
    evaluate = _make_evaluate(task, tuple(eval_splits), eval_batches, full_split_eval)

    def evaluate_seed(snapshots_E, key):
        eval_key = jax.random.split(key, 3)[2]
        num_evals = jax.tree.leaves(snapshots_E)[0].shape[0]
        eval_keys = jax.vmap(lambda i: jax.random.fold_in(eval_key, i))(jnp.arange(num_evals))
        return jax.vmap(evaluate)(snapshots_E, eval_keys)

    return jax.jit(jax.vmap(evaluate_seed))


def make_run_fn(
    task: Task,
    make_tx: Callable[[PyTree], optax.GradientTransformation],
    *,
    num_steps: int,
    eval_every: int,
    eval_splits: Sequence[str] = ("train", "valid"),
    eval_batches: int = 1,
    full_split_eval: bool = False,
    keep_snapshots: bool = False,
    fixed_train_batch: bool = False,
) -> Callable[[PyTree, jax.Array], Curves]:
    """A jitted `run(tx_args, keys_S) -> Curves` training `task` for `num_steps` per seed key.

    Args:
      task: any object with the Task protocol (`init`, `loss`, `sample_batch`, maybe `metrics`).
      make_tx: builds the optimizer from `tx_args` (arrays, traced inside jit).
      num_steps: training steps per run; a multiple of `eval_every`.
      eval_every: evaluate every this many steps (and at step 0).
      eval_splits: the splits evaluation reads. The only place a split other than "train" is read.
      eval_batches: batches averaged per evaluation and split.
      full_split_eval: evaluate "valid" / "test" on the whole split (`task.full_split(split)`,
        when the task has it) instead of `eval_batches` sampled batches: exact, not noisy.
      keep_snapshots: also return the parameters at every evaluation step (`Curves.snapshots`).
      fixed_train_batch: train on ONE batch per seed, drawn once, at every step, and evaluate
        "train" on that same batch (the "overfit one batch" sanity check of `models.debugging`).

    Returns:
      `run(tx_args, keys)`: `tx_args` is shared by all seeds, `keys` has a leading seed axis.
    """
    _check_loop_args(num_steps, eval_every, eval_splits, eval_batches)
    evaluate = _make_evaluate(task, tuple(eval_splits), eval_batches, full_split_eval)
    num_chunks = num_steps // eval_every

    def run_one_seed(tx_args, key):
        init_key, train_key, eval_key = jax.random.split(key, 3)
        tx = _as_extra_args(make_tx(tx_args))
        params = task.init(init_key)
        opt_state = tx.init(params)

        one_batch = task.sample_batch(train_key, "train") if fixed_train_batch else None

        def train_step(carry, step):
            params, opt_state = carry
            batch = (one_batch if fixed_train_batch
                     else task.sample_batch(jax.random.fold_in(train_key, step), "train"))
            loss, grads = jax.value_and_grad(task.loss)(params, batch)
            updates, opt_state = tx.update(grads, opt_state, params, value=loss)
            return (optax.apply_updates(params, updates), opt_state), loss

        def train_chunk(carry, chunk_index):
            steps = chunk_index * eval_every + jnp.arange(eval_every)
            carry, losses = jax.lax.scan(train_step, carry, steps)
            evals = evaluate(carry[0], jax.random.fold_in(eval_key, chunk_index + 1), one_batch)
            return carry, (losses, evals, carry[0] if keep_snapshots else None)

        first_evals = evaluate(params, jax.random.fold_in(eval_key, 0), one_batch)
        _, (losses, evals, snapshots) = jax.lax.scan(
            train_chunk, (params, opt_state), jnp.arange(num_chunks)
        )
        prepend = lambda first, rest: jnp.concatenate([first[None], rest])
        if keep_snapshots:
            snapshots = jax.tree.map(prepend, params, snapshots)
        return losses.reshape(num_steps), jax.tree.map(prepend, first_evals, evals), snapshots

    @jax.jit
    def run(tx_args, keys):
        train_loss, evals, snapshots = jax.vmap(run_one_seed, in_axes=(None, 0))(tx_args, keys)
        steps = jnp.asarray(eval_steps_of(num_steps, eval_every))
        return Curves(train_loss, evals, steps, snapshots)

    return run


def train_loss_curve(task: Task, tx: optax.GradientTransformation, key: jax.Array,
                     num_steps: int) -> jax.Array:
    """(num_steps,) per-step training losses of `tx` on `task`, nothing evaluated: the light loop
    of checkpoint selection and long stability runs (`make_run_fn` is the full one). Traceable:
    jit or vmap it. Parameters come from `fold_in(key, 0)`, step k's batch from
    `fold_in(fold_in(key, 1), k)`.

        losses = jax.jit(lambda k: train_loss_curve(task, optax.adam(1e-3), k, 1000))(key)
    """
    tx = _as_extra_args(tx)
    params = task.init(jax.random.fold_in(key, 0))
    batch_key = jax.random.fold_in(key, 1)

    def step(carry, k):
        params, state = carry
        batch = task.sample_batch(jax.random.fold_in(batch_key, k), "train")
        loss, grads = jax.value_and_grad(task.loss)(params, batch)
        updates, state = tx.update(grads, state, params, value=loss)
        return (optax.apply_updates(params, updates), state), loss

    _, losses = jax.lax.scan(step, (params, tx.init(params)), jnp.arange(num_steps))
    return losses


def optimizer_state_bytes(task: Task, tx: optax.GradientTransformation) -> int:
    """Bytes of `tx`'s state for `task`'s parameters (shapes only: nothing is computed)."""
    params = jax.eval_shape(task.init, jax.random.key(0))
    state = jax.eval_shape(tx.init, params)
    return int(sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(state)))


def num_parameters(task: Task) -> int:
    """Number of scalar parameters of `task` (shapes only)."""
    params = jax.eval_shape(task.init, jax.random.key(0))
    return int(sum(leaf.size for leaf in jax.tree.leaves(params)))
