"""Pipeline parallelism in SPMD JAX: GPipe and 1F1B schedules over the `stage` mesh axis.

A model is a stack of `num_stages` stages of one shape: `stage_fn(params_of_one_stage, x) -> y`
with `y` shaped like `x`, and `stage_params` a pytree whose leaves have a leading axis of size
`num_stages` (stage s owns slice s). The batch is cut into micro-batches that flow through the
stages like an assembly line. Stages live on the `stage` axis of a mesh; `jax.shard_map` is
manual over that axis only, so other axes (`data`, `model`) stay automatic and follow the
shardings of the arguments. Each schedule is a `lax.scan` over ticks in which every stage runs
its stage, then hands its activation to the next stage with one `lax.ppermute`
(`parallel.pipeline_schedule`: the tables and their bubbles; `parallel.pipeline_stages`: the
programs each stage runs).

  gpipe  a forward scan over m+p-1 ticks; its backward is `jax.grad` of that scan (so `apply`
         is differentiable by any JAX transformation). Activations of all micro-batches are
         kept for the backward: memory grows with m.
  1f1b   PipeDream-Flush: one scan over 2(m+p-1) ticks; after a warm-up each stage alternates
         the forward of one micro-batch and the backward of an older one (a `lax.switch` on
         the stage's own entry of the schedule table), the backward through an explicit
         `jax.vjp` that recomputes the stage from its stored input. A ring buffer holds at most
         p stage inputs, whatever m is: memory is flat in m. Same bubble as GPipe,
         (p-1)/(m+p-1); the price is one extra stage forward per micro-batch (as with full
         remat of each stage). The loss head runs only in the last stage's backward slots.

    mesh = parallel.mesh.make_mesh({"data": 2, "model": 2, "stage": 2})
    loss, grads = pipeline.value_and_grad(stage_fn, loss_fn, stage_params, inputs, targets,
                                          mesh=mesh, num_microbatches=8, schedule="1f1b")
    outputs = pipeline.apply(stage_fn, stage_params, inputs, mesh=mesh, num_microbatches=8)
    # a whole model: a trainable head inside the loss, cotangents of the inputs for the embedding
    loss, (g_stages, g_head, g_inputs) = pipeline.value_and_grad_with_head(
        stage_fn, head_loss_fn, stage_params, head_params, inputs, targets, mesh=mesh, ...)

`loss_fn(outputs, targets)` must be a mean over the examples of the batch: micro-batches are
equal-sized, so the mean of micro-batch losses is the full-batch loss. Micro-batch i holds
examples i, i+m, i+2m, ... so that a batch sharded over `data` stays sharded within every
micro-batch. Under 1F1B the loss head runs inside the shard_map: with a vocabulary sharded over
an automatic axis, use `softmax_cross_entropy_with_integer_labels` from
`parallel.pipeline_heads` (re-exported here) rather than optax's, whose gather aborts XLA's
partitioner there (see that module).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from parallel import pipeline_stages as stages
from parallel import remat
from parallel.pipeline_heads import softmax_cross_entropy_with_integer_labels
from parallel.pipeline_schedule import GPIPE, SCHEDULES, check_schedule

PyTree = Any

__all__ = [
    "SCHEDULES",
    "apply",
    "num_stages_of",
    "sequential_apply",
    "sequential_reference",
    "softmax_cross_entropy_with_integer_labels",
    "value_and_grad",
    "value_and_grad_with_head",
]


# ----------------------------------------------------------------------------- input checks


def num_stages_of(stage_params: PyTree) -> int:
    """The common leading-axis size of `stage_params`' leaves, with errors naming bad leaves."""
    leaves = jax.tree_util.tree_leaves_with_path(stage_params)
    if not leaves:
        raise ValueError("stage_params has no array leaves")
    sizes = {}
    for path, leaf in leaves:
        name = jax.tree_util.keystr(path) or "<root>"
        if jnp.ndim(leaf) == 0:
            raise ValueError(
                f"stage_params leaf {name} is a scalar; every leaf needs a leading stage axis "
                "(stack the per-stage parameters, e.g. with jax.tree.map(jnp.stack, ...))"
            )
        sizes[name] = jnp.shape(leaf)[0]
    if len(set(sizes.values())) > 1:
        raise ValueError(
            f"stage_params leaves disagree on the leading stage axis: {sizes}; every leaf needs a "
            "leading axis of size num_stages"
        )
    return next(iter(sizes.values()))


def _check_batch(tree: PyTree, name: str, num_microbatches: int) -> set[int]:
    """The leading (batch) sizes of `tree`'s leaves, each checked to split into micro-batches."""
    sizes = set()
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        batch = jnp.shape(leaf)[0] if jnp.ndim(leaf) else None
        if batch is None or batch % num_microbatches:
            raise ValueError(
                f"batch size {batch} of {name}{jax.tree_util.keystr(path)} is not divisible by "
                f"num_microbatches={num_microbatches}"
            )
        sizes.add(batch)
    return sizes


def _check_call(stage_params, inputs, mesh: Mesh, stage_axis: str, num_microbatches,
                targets: PyTree = None) -> int:
    if stage_axis not in mesh.shape:
        raise ValueError(f"mesh has no axis {stage_axis!r}; its axes are {dict(mesh.shape)}")
    num_stages = num_stages_of(stage_params)
    mesh_stages = int(mesh.shape[stage_axis])
    if num_stages != mesh_stages:
        raise ValueError(
            f"stage_params have {num_stages} stages (leading axis) but mesh axis {stage_axis!r} "
            f"has size {mesh_stages}; they must be equal"
        )
    if not isinstance(num_microbatches, int) or num_microbatches < 1:
        raise ValueError(f"num_microbatches must be a positive int, got {num_microbatches!r}")
    batch_sizes = _check_batch(inputs, "inputs", num_microbatches)
    if targets is not None:
        batch_sizes |= _check_batch(targets, "targets", num_microbatches)
    if len(batch_sizes) > 1:
        raise ValueError(f"inputs and targets disagree on the batch size: {sorted(batch_sizes)}")
    return num_stages


def _stage_fn_with_remat(stage_fn: Callable, remat_policy: str | None) -> Callable:
    return stage_fn if remat_policy is None else remat.checkpoint(stage_fn, remat_policy)


# ----------------------------------------------------------------------------- public API


def apply(
    stage_fn: Callable[[PyTree, PyTree], PyTree],
    stage_params: PyTree,
    inputs: PyTree,
    *,
    mesh: Mesh,
    stage_axis: str = "stage",
    num_microbatches: int,
    remat_policy: str | None = None,
) -> PyTree:
    """Forward pass of the stage stack over the batch, pipelined with the GPipe schedule.

    Equal to `sequential_apply(stage_fn, stage_params, inputs)`, and differentiable by
    `jax.grad` / `jax.vjp` (the backward is the forward scan reversed: GPipe's backward).

    Args:
      stage_fn: `(params_of_one_stage, x) -> y`, `y` with the shape and dtype of `x`.
      stage_params: pytree, every leaf with a leading axis of size `mesh.shape[stage_axis]`.
      inputs: the batch (pytree of arrays with a leading batch axis divisible by m).
      mesh: a mesh with a `stage_axis` axis; other axes stay automatic.
      stage_axis: name of the pipeline axis.
      num_microbatches: m, the number of micro-batches the batch is cut into.
      remat_policy: if given, a `parallel.remat` policy applied to `stage_fn`.

    Returns:
      The outputs of the last stage for the whole batch, shaped like `inputs`.

    Example:
      y = apply(block, stacked_params, x, mesh=mesh, num_microbatches=4)
    """
    num_stages = _check_call(stage_params, inputs, mesh, stage_axis, num_microbatches)
    forward = stages.gpipe_forward(
        _stage_fn_with_remat(stage_fn, remat_policy), mesh=mesh, stage_axis=stage_axis,
        num_stages=num_stages, num_microbatches=num_microbatches,
    )
    outputs = forward(stage_params, stages.split_microbatches(inputs, num_microbatches))
    return stages.merge_microbatches(outputs)


def value_and_grad(
    stage_fn: Callable[[PyTree, PyTree], PyTree],
    loss_fn: Callable[[PyTree, PyTree], jax.Array],
    stage_params: PyTree,
    inputs: PyTree,
    targets: PyTree,
    *,
    mesh: Mesh,
    stage_axis: str = "stage",
    num_microbatches: int,
    schedule: str = GPIPE,
    remat_policy: str | None = None,
    stage_ops: str = "auto",
) -> tuple[jax.Array, PyTree]:
    """Loss of the stage stack on the batch and its gradient w.r.t. `stage_params`, pipelined.

    Equal (up to float rounding) to `sequential_reference(stage_fn, loss_fn, stage_params,
    inputs, targets)`. Jit it (with `stage_fn`, `loss_fn`, `mesh` and the ints static).

    Args:
      stage_fn: `(params_of_one_stage, x) -> y`, `y` with the shape and dtype of `x`.
      loss_fn: `(outputs, targets) -> scalar`, a mean over the examples of the batch.
      stage_params: pytree, every leaf with a leading axis of size `mesh.shape[stage_axis]`.
      inputs, targets: the batch (leading batch axis divisible by `num_microbatches`).
      mesh: a mesh with a `stage_axis` axis; other axes stay automatic.
      stage_axis: name of the pipeline axis.
      num_microbatches: m, the number of micro-batches.
      schedule: "gpipe" or "1f1b" (see the module docstring).
      remat_policy: if given, a `parallel.remat` policy ("full", "dots", "names:a,b", ...)
        applied to `stage_fn` inside every stage.
      stage_ops: how a 1F1B stage runs its op of a tick. "switch": only that op (a
        `lax.switch`), safe when the stage program's collectives on the other mesh axes are
        all-reduces / all-gathers, not collective-permutes (see
        `parallel.pipeline_stages.one_f_one_b`). "masked": forward and backward every tick, the
        scheduled one kept (any program; about twice the compute). "auto" (default): "switch"
        when every other mesh axis has size 1, else "masked". Ignored by GPipe.

    Returns:
      `(loss, grads)`: the scalar loss and a pytree shaped like `stage_params`.

    Example:
      step = jax.jit(functools.partial(value_and_grad, block, mse, mesh=mesh,
                                       num_microbatches=8, schedule="1f1b"))
      loss, grads = step(stacked_params, x, y)
    """
    loss, (grads, _, _) = value_and_grad_with_head(
        stage_fn, lambda _, outputs, targets: loss_fn(outputs, targets), stage_params, (),
        inputs, targets, mesh=mesh, stage_axis=stage_axis, num_microbatches=num_microbatches,
        schedule=schedule, remat_policy=remat_policy, with_input_grads=False,
        stage_ops=stage_ops,
    )
    return loss, grads


def value_and_grad_with_head(
    stage_fn: Callable[[PyTree, PyTree], PyTree],
    head_loss_fn: Callable[[PyTree, PyTree, PyTree], jax.Array],
    stage_params: PyTree,
    head_params: PyTree,
    inputs: PyTree,
    targets: PyTree,
    *,
    mesh: Mesh,
    stage_axis: str = "stage",
    num_microbatches: int,
    schedule: str = GPIPE,
    remat_policy: str | None = None,
    with_input_grads: bool = True,
    stage_ops: str = "auto",
) -> tuple[jax.Array, tuple[PyTree, PyTree, PyTree | None]]:
    """`value_and_grad` for a whole model: a trainable head in the loss, and input cotangents.

    The loss is `head_loss_fn(head_params, outputs_of_the_last_stage, targets)` (a mean over the
    batch, e.g. final norm + unembedding + cross-entropy); `head_params` are replicated over the
    stage axis. The cotangent of `inputs` lets the caller pull gradients back into whatever
    produced them (an embedding, run data-parallel before the pipeline):

        x, embed_pullback = jax.vjp(lambda e: e[tokens], embedding)
        loss, (g_stages, g_head, g_x) = value_and_grad_with_head(
            blocks, lm_loss, stacked_blocks, head, x, labels, mesh=mesh, num_microbatches=8,
            schedule="1f1b")
        (g_embedding,) = embed_pullback(g_x)

    Returns:
      `(loss, (stage_grads, head_grads, input_grads))`, `input_grads` None when
      `with_input_grads` is False (1F1B then keeps no buffer for them).
    """
    check_schedule(schedule)
    num_stages = _check_call(stage_params, inputs, mesh, stage_axis, num_microbatches, targets)
    stage_ops = stages.resolve_stage_ops(stage_ops, mesh, stage_axis)
    stage_fn = _stage_fn_with_remat(stage_fn, remat_policy)
    if schedule == GPIPE:
        forward = stages.gpipe_forward(stage_fn, mesh=mesh, stage_axis=stage_axis,
                                       num_stages=num_stages, num_microbatches=num_microbatches)

        def loss_of(params, head_params, inputs):
            outputs_mb = forward(params, stages.split_microbatches(inputs, num_microbatches))
            return head_loss_fn(head_params, stages.merge_microbatches(outputs_mb), targets)

        argnums = (0, 1, 2) if with_input_grads else (0, 1)
        loss, grads = jax.value_and_grad(loss_of, argnums)(stage_params, head_params, inputs)
        return loss, (grads[0], grads[1], grads[2] if with_input_grads else None)
    pipelined = stages.one_f_one_b(
        stage_fn, head_loss_fn, mesh=mesh, stage_axis=stage_axis, num_stages=num_stages,
        num_microbatches=num_microbatches, with_input_grads=with_input_grads,
        stage_ops=stage_ops,
    )
    loss, grads, head_grads, input_grads_mb = pipelined(
        stage_params, head_params, stages.split_microbatches(inputs, num_microbatches),
        stages.split_microbatches(targets, num_microbatches),
    )
    if with_input_grads:
        input_grads_mb = stages.merge_microbatches(input_grads_mb)
    return loss, (grads, head_grads, input_grads_mb)


def sequential_apply(stage_fn: Callable, stage_params: PyTree, inputs: PyTree) -> PyTree:
    """The stages one after another on the whole batch, on one device: the reference."""
    num_stages_of(stage_params)

    def one_stage(x, params):
        return stage_fn(params, x), None

    return jax.lax.scan(one_stage, inputs, stage_params)[0]


def sequential_reference(
    stage_fn: Callable, loss_fn: Callable, stage_params: PyTree, inputs: PyTree, targets: PyTree
) -> tuple[jax.Array, PyTree]:
    """`(loss, grads)` of the stages run one after another on the whole batch: the reference
    that `value_and_grad` must equal."""
    return jax.value_and_grad(
        lambda params: loss_fn(sequential_apply(stage_fn, params, inputs), targets)
    )(stage_params)
