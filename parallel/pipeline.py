"""Pipeline parallelism in SPMD JAX: GPipe and 1F1B schedules over the `stage` mesh axis.

A model is a stack of `num_stages` stages of one shape: `stage_fn(params_of_one_stage, x) -> y`
with `y` shaped like `x`, and `stage_params` a pytree whose leaves have a leading axis of size
`num_stages` (stage s owns slice s). The batch is cut into micro-batches that flow through the
stages like an assembly line. Stages live on the `stage` axis of a mesh; `jax.shard_map` is
manual over that axis only, so other axes (`data`, `model`) stay automatic and follow the
shardings of the arguments. Each schedule is a `lax.scan` over ticks in which every stage runs
its stage, then hands its activation to the next stage with one `lax.ppermute`
(see `parallel.pipeline_schedule` for the tables and their bubbles).

  gpipe  a forward scan over m+p-1 ticks; its backward is `jax.grad` of that scan (so `apply`
         is differentiable by any JAX transformation). Activations of all micro-batches are
         kept for the backward: memory grows with m.
  1f1b   one scan over m+2p-2 ticks; each tick a stage runs the forward of one micro-batch and
         the backward of an older one, the backward through an explicit `jax.vjp` that
         recomputes the stage from its stored input. A circular buffer holds at most 2p-1 stage
         inputs, whatever m is: memory is flat in m, for one extra stage forward per micro-batch.

    mesh = parallel.mesh.make_mesh({"data": 2, "model": 2, "stage": 2})
    loss, grads = pipeline.value_and_grad(stage_fn, loss_fn, stage_params, inputs, targets,
                                          mesh=mesh, num_microbatches=8, schedule="1f1b")
    outputs = pipeline.apply(stage_fn, stage_params, inputs, mesh=mesh, num_microbatches=8)

`loss_fn(outputs, targets)` must be a mean over the examples of the batch: micro-batches are
equal-sized, so the mean of micro-batch losses is the full-batch loss. Micro-batch i holds
examples i, i+m, i+2m, ... so that a batch sharded over `data` stays sharded within every
micro-batch. Every stage evaluates the loss head on its micro-batch each tick (results of other
stages than the last are masked out); keep expensive heads out of `loss_fn` when that matters.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec

from parallel import remat
from parallel.pipeline_schedule import (
    GPIPE,
    SCHEDULES,
    backward_microbatch_1f1b,
    check_schedule,
    forward_microbatch,
    num_ticks,
    stash_size_1f1b,
)

PyTree = Any

__all__ = ["SCHEDULES", "apply", "num_stages_of", "sequential_apply", "sequential_reference",
           "value_and_grad"]


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


def _check_call(stage_params, inputs, mesh: Mesh, stage_axis: str, num_microbatches) -> int:
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
    for path, leaf in jax.tree_util.tree_leaves_with_path(inputs):
        batch = jnp.shape(leaf)[0] if jnp.ndim(leaf) else None
        if batch is None or batch % num_microbatches:
            raise ValueError(
                f"batch size {batch} of inputs{jax.tree_util.keystr(path)} is not divisible by "
                f"num_microbatches={num_microbatches}"
            )
    return num_stages


# ----------------------------------------------------------------------------- micro-batches


def _split(tree: PyTree, num_microbatches: int) -> PyTree:
    """[B, ...] -> [B/m, m, ...]: micro-batch i is `[:, i]`, examples i, i+m, i+2m, ...

    A reshape only (no copy of the batch). Strided, so that a batch sharded over `data` in
    contiguous blocks stays sharded inside each micro-batch.
    """
    return jax.tree.map(
        lambda x: x.reshape(x.shape[0] // num_microbatches, num_microbatches, *x.shape[1:]), tree
    )


def _microbatch(split_tree: PyTree, index) -> PyTree:
    """Micro-batch `index` of a `_split` tree."""
    return jax.tree.map(
        lambda x: jax.lax.dynamic_index_in_dim(x, index, 1, keepdims=False), split_tree
    )


def _merge(tree: PyTree) -> PyTree:
    """Micro-batch outputs stacked [m, B/m, ...] -> [B, ...] in the order of the batch."""
    return jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1).reshape(-1, *x.shape[2:]), tree)


def _take(tree: PyTree, index) -> PyTree:
    return jax.tree.map(lambda x: jax.lax.dynamic_index_in_dim(x, index, 0, keepdims=False), tree)


def _where(pred, on_true: PyTree, on_false: PyTree) -> PyTree:
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


def _ring(num_stages: int, shift: int) -> list[tuple[int, int]]:
    # A ring, not a line: what wraps around (last -> first) is never read, and a ring keeps
    # every device sending and receiving one buffer per tick.
    return [(s, (s + shift) % num_stages) for s in range(num_stages)]


def _varying(x, axis):
    return jax.lax.pcast(x, (axis,), to="varying")


def _stage_fn_with_remat(stage_fn: Callable, remat_policy: str | None) -> Callable:
    return stage_fn if remat_policy is None else remat.checkpoint(stage_fn, remat_policy)


# ----------------------------------------------------------------------------- GPipe


def _gpipe_stage_program(stage_fn, num_stages, num_microbatches, stage_axis):
    """Body run by each stage under shard_map: the forward scan; returns its ticks' outputs."""

    def program(stage_params, inputs_mb):
        params = jax.tree.map(lambda a: a[0], stage_params)  # this device's stage
        stage = jax.lax.axis_index(stage_axis)
        inputs_mb = jax.lax.pcast(inputs_mb, (stage_axis,), to="varying")
        received = jax.tree.map(lambda x: jnp.zeros_like(x[:, 0]), inputs_mb)

        def tick(received, t):
            microbatch = jnp.clip(forward_microbatch(t, stage), 0, num_microbatches - 1)
            x = _where(stage == 0, _microbatch(inputs_mb, microbatch), received)
            y = stage_fn(params, x)
            return jax.lax.ppermute(y, stage_axis, _ring(num_stages, 1)), y

        ticks = jnp.arange(num_ticks(GPIPE, num_stages, num_microbatches))
        _, outputs = jax.lax.scan(tick, received, ticks)
        # The last stage finishes micro-batch i at tick i + p - 1.
        outputs = jax.tree.map(lambda y: y[num_stages - 1 :], outputs)
        return jax.tree.map(lambda y: y[None], outputs)

    return program


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
    stage_fn = _stage_fn_with_remat(stage_fn, remat_policy)
    program = _gpipe_stage_program(stage_fn, num_stages, num_microbatches, stage_axis)
    pipelined = jax.shard_map(
        program,
        mesh=mesh,
        in_specs=(PartitionSpec(stage_axis), PartitionSpec()),
        out_specs=PartitionSpec(stage_axis),
        axis_names={stage_axis},
    )
    outputs = pipelined(stage_params, _split(inputs, num_microbatches))
    return _merge(jax.tree.map(lambda y: y[num_stages - 1], outputs))


# ----------------------------------------------------------------------------- 1F1B


def _one_f_one_b_stage_program(stage_fn, loss_fn, num_stages, num_microbatches, stage_axis):
    """Body run by each stage under shard_map: the 1F1B scan; returns (loss, stage grads)."""
    stash_size = stash_size_1f1b(num_stages)
    last = num_stages - 1

    def stage_and_loss(params, x, targets):
        y = stage_fn(params, x)
        return y, loss_fn(y, targets) / num_microbatches

    def program(stage_params, inputs_mb, targets_mb):
        params = jax.tree.map(lambda a: a[0], stage_params)
        stage = jax.lax.axis_index(stage_axis)
        inputs_mb, targets_mb = jax.lax.pcast((inputs_mb, targets_mb), (stage_axis,), to="varying")
        zeros_like_x = jax.tree.map(lambda x: jnp.zeros_like(x[:, 0]), inputs_mb)
        stash = jax.tree.map(
            lambda x: _varying(jnp.zeros((stash_size, *x.shape), x.dtype), stage_axis),
            zeros_like_x,
        )
        carry = (  # every component stage-varying, as the scan body's outputs are
            zeros_like_x,  # activation received from the previous stage
            zeros_like_x,  # cotangent received from the next stage
            stash,  # inputs of micro-batches forwarded but not yet backwarded
            jax.tree.map(jnp.zeros_like, params),  # gradient accumulator
            _varying(jnp.zeros((), jnp.float32), stage_axis),  # loss (last stage only)
        )

        def tick(carry, t):
            received_x, received_g, stash, grads, loss = carry
            # Forward slot: stage 0 reads the batch, the others what their neighbour sent.
            fwd_mb = forward_microbatch(t, stage)
            x = _where(
                stage == 0,
                _microbatch(inputs_mb, jnp.clip(fwd_mb, 0, num_microbatches - 1)),
                received_x,
            )
            y = stage_fn(params, x)
            # Unconditional write is safe: the slot's previous micro-batch finished its backward
            # (see stash_size_1f1b), and out-of-range micro-batches land in unused slots.
            stash = jax.tree.map(
                lambda buf, v: jax.lax.dynamic_update_index_in_dim(buf, v, fwd_mb % stash_size, 0),
                stash,
                x,
            )
            # Backward slot: recompute the stage from its stored input, pull back the cotangent
            # (the loss's, on the last stage; the next stage's, elsewhere).
            bwd_mb = backward_microbatch_1f1b(t, stage, num_stages)
            active = (bwd_mb >= 0) & (bwd_mb < num_microbatches)
            x_bwd = _take(stash, bwd_mb % stash_size)
            targets = _microbatch(targets_mb, jnp.clip(bwd_mb, 0, num_microbatches - 1))
            (_, mb_loss), pullback = jax.vjp(
                functools.partial(stage_and_loss, targets=targets), params, x_bwd
            )
            g_out = _where(active & (stage != last), received_g, jax.tree.map(jnp.zeros_like, y))
            g_loss = jnp.where(active & (stage == last), 1.0, 0.0).astype(mb_loss.dtype)
            d_params, d_x = pullback((g_out, g_loss))
            grads = jax.tree.map(lambda a, d: a + jnp.where(active, d, 0), grads, d_params)
            loss = loss + jnp.where(active & (stage == last), mb_loss, 0).astype(loss.dtype)
            d_x = _where(active, d_x, jax.tree.map(jnp.zeros_like, d_x))
            sent_x = jax.lax.ppermute(y, stage_axis, _ring(num_stages, 1))
            sent_g = jax.lax.ppermute(d_x, stage_axis, _ring(num_stages, -1))
            return (sent_x, sent_g, stash, grads, loss), None

        ticks = jnp.arange(num_ticks("1f1b", num_stages, num_microbatches))
        (_, _, _, grads, loss), _ = jax.lax.scan(tick, carry, ticks)
        return jax.lax.psum(loss, stage_axis), jax.tree.map(lambda g: g[None], grads)

    return program


def _one_f_one_b(stage_fn, loss_fn, stage_params, inputs, targets, *, mesh, stage_axis,
                 num_stages, num_microbatches):
    program = _one_f_one_b_stage_program(
        stage_fn, loss_fn, num_stages, num_microbatches, stage_axis
    )
    pipelined = jax.shard_map(
        program,
        mesh=mesh,
        in_specs=(PartitionSpec(stage_axis), PartitionSpec(), PartitionSpec()),
        out_specs=(PartitionSpec(), PartitionSpec(stage_axis)),
        axis_names={stage_axis},
    )
    return pipelined(
        stage_params, _split(inputs, num_microbatches), _split(targets, num_microbatches)
    )


# ----------------------------------------------------------------------------- public API


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

    Returns:
      `(loss, grads)`: the scalar loss and a pytree shaped like `stage_params`.

    Example:
      step = jax.jit(functools.partial(value_and_grad, block, mse, mesh=mesh,
                                       num_microbatches=8, schedule="1f1b"))
      loss, grads = step(stacked_params, x, y)
    """
    check_schedule(schedule)
    num_stages = _check_call(stage_params, inputs, mesh, stage_axis, num_microbatches)
    if schedule == GPIPE:
        def loss_of(params):
            outputs = apply(stage_fn, params, inputs, mesh=mesh, stage_axis=stage_axis,
                            num_microbatches=num_microbatches, remat_policy=remat_policy)
            return loss_fn(outputs, targets)

        return jax.value_and_grad(loss_of)(stage_params)
    return _one_f_one_b(
        _stage_fn_with_remat(stage_fn, remat_policy), loss_fn, stage_params, inputs, targets,
        mesh=mesh, stage_axis=stage_axis, num_stages=num_stages,
        num_microbatches=num_microbatches,
    )


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
