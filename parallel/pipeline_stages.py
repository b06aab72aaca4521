"""The per-stage programs of `parallel.pipeline`: what every stage runs under `jax.shard_map`.

Both programs are a `lax.scan` over the ticks of `parallel.pipeline_schedule`. At each tick every
stage computes (stages without work compute on placeholders whose results are masked out: SPMD
devices cannot branch apart here, because collectives of the automatic `data` / `model` axes
inside divergent `lax.cond` branches deadlock), then sends its activation to the next stage and,
under 1F1B, its input cotangent to the previous one, with `lax.ppermute`.

Callers go through `parallel.pipeline`; inputs are checked there.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec

from parallel.pipeline_schedule import (
    GPIPE,
    ONE_F_ONE_B,
    backward_microbatch_1f1b,
    forward_microbatch,
    num_ticks,
    stash_size_1f1b,
)

PyTree = Any


# ----------------------------------------------------------------------------- micro-batches


def split_microbatches(tree: PyTree, num_microbatches: int) -> PyTree:
    """[B, ...] -> [B/m, m, ...]: micro-batch i is `[:, i]`, examples i, i+m, i+2m, ...

    A reshape only (no copy of the batch). Strided, so that a batch sharded over `data` in
    contiguous blocks stays sharded inside each micro-batch.
    """
    return jax.tree.map(
        lambda x: x.reshape(x.shape[0] // num_microbatches, num_microbatches, *x.shape[1:]), tree
    )


def merge_microbatches(tree: PyTree) -> PyTree:
    """Inverse of `split_microbatches`: [B/m, m, ...] -> [B, ...]."""
    return jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), tree)


def _microbatch(split_tree: PyTree, index) -> PyTree:
    return jax.tree.map(
        lambda x: jax.lax.dynamic_index_in_dim(x, index, 1, keepdims=False), split_tree
    )


def _set_microbatch(split_tree: PyTree, index, value: PyTree) -> PyTree:
    return jax.tree.map(
        lambda buf, v: jax.lax.dynamic_update_index_in_dim(buf, v, index, 1), split_tree, value
    )


def _take(tree: PyTree, index) -> PyTree:
    return jax.tree.map(lambda x: jax.lax.dynamic_index_in_dim(x, index, 0, keepdims=False), tree)


def _where(pred, on_true: PyTree, on_false: PyTree) -> PyTree:
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


def _zeros_like(tree: PyTree) -> PyTree:
    return jax.tree.map(jnp.zeros_like, tree)


def _ring(num_stages: int, shift: int) -> list[tuple[int, int]]:
    # A ring, not a line: what wraps around (last -> first) is never read, and a ring keeps
    # every device sending and receiving one buffer per tick.
    return [(s, (s + shift) % num_stages) for s in range(num_stages)]


def _varying(tree: PyTree, axis: str) -> PyTree:
    """Mark values as differing across `axis` (shard_map's VMA types): scan carries must be.
    Values already varying (derived from stage-sharded arguments) are left as they are."""

    def cast(x):
        if axis in jax.typeof(x).manual_axis_type.varying:
            return x
        return jax.lax.pcast(x, (axis,), to="varying")

    return jax.tree.map(cast, tree)


def _first_stage_input(stage, inputs_mb, microbatch, received):
    """Stage 0 reads the batch, the others what their neighbour sent."""
    return _where(stage == 0, _microbatch(inputs_mb, microbatch), received)


# ----------------------------------------------------------------------------- GPipe


def gpipe_forward(stage_fn: Callable, *, mesh: Mesh, stage_axis: str, num_stages: int,
                  num_microbatches: int) -> Callable[[PyTree, PyTree], PyTree]:
    """`(stage_params, inputs_mb) -> outputs_mb`: the GPipe forward scan under shard_map.

    Micro-batch i enters stage s at tick i + s. Differentiable: `jax.grad` runs the scan in
    reverse, which is GPipe's backward. Outputs are split like the inputs ([B/m, m, ...]).
    """
    last = num_stages - 1

    def program(stage_params, inputs_mb):
        params = jax.tree.map(lambda a: a[0], stage_params)  # this device's stage
        stage = jax.lax.axis_index(stage_axis)
        inputs_mb = _varying(inputs_mb, stage_axis)
        received = jax.tree.map(lambda x: jnp.zeros_like(x[:, 0]), inputs_mb)

        def tick(received, t):
            microbatch = jnp.clip(forward_microbatch(t, stage), 0, num_microbatches - 1)
            y = stage_fn(params, _first_stage_input(stage, inputs_mb, microbatch, received))
            return jax.lax.ppermute(y, stage_axis, _ring(num_stages, 1)), y

        ticks = jnp.arange(num_ticks(GPIPE, num_stages, num_microbatches))
        _, outputs = jax.lax.scan(tick, received, ticks)
        # The last stage finishes micro-batch i at tick i + p - 1; [T, B/m, ...] -> [B/m, m, ...]
        return jax.tree.map(lambda y: jnp.swapaxes(y[last:], 0, 1)[None], outputs)

    pipelined = jax.shard_map(
        program, mesh=mesh, in_specs=(PartitionSpec(stage_axis), PartitionSpec()),
        out_specs=PartitionSpec(stage_axis), axis_names={stage_axis},
    )
    return lambda stage_params, inputs_mb: jax.tree.map(
        lambda y: y[last], pipelined(stage_params, inputs_mb)
    )


# ----------------------------------------------------------------------------- 1F1B


def one_f_one_b(stage_fn: Callable, head_loss_fn: Callable, *, mesh: Mesh, stage_axis: str,
                num_stages: int, num_microbatches: int, with_input_grads: bool) -> Callable:
    """`(stage_params, head_params, inputs_mb, targets_mb) -> (loss, stage_grads, head_grads,
    input_grads_mb or None)`: the 1F1B scan under shard_map.

    `head_loss_fn(head_params, outputs, targets)` is the mean loss of one micro-batch; the
    micro-batch losses are averaged. Stage s runs the forward of micro-batch t - s and the
    backward of micro-batch t - 2(p-1) + s at tick t. The backward recomputes the stage from
    its input, kept in a circular buffer of `stash_size_1f1b(p)` slots.
    """
    stash_size = stash_size_1f1b(num_stages)
    last = num_stages - 1

    def stage_and_loss(params, head_params, x, targets):
        y = stage_fn(params, x)
        return y, head_loss_fn(head_params, y, targets) / num_microbatches

    def program(stage_params, head_params, inputs_mb, targets_mb):
        params = jax.tree.map(lambda a: a[0], stage_params)
        stage = jax.lax.axis_index(stage_axis)
        inputs_mb, targets_mb, head_params = _varying(
            (inputs_mb, targets_mb, head_params), stage_axis
        )
        placeholder_x = jax.tree.map(lambda x: jnp.zeros_like(x[:, 0]), inputs_mb)
        carry = (  # every component stage-varying, as the scan body's outputs are
            placeholder_x,  # activation received from the previous stage
            placeholder_x,  # cotangent received from the next stage
            # inputs of micro-batches forwarded but not yet backwarded
            jax.tree.map(lambda x: jnp.zeros((stash_size, *x.shape), x.dtype), placeholder_x),
            _zeros_like(params),  # stage gradient accumulator
            _zeros_like(head_params),  # head gradient accumulator (last stage only)
            jnp.zeros((), jnp.float32),  # loss accumulator (last stage only)
            _zeros_like(inputs_mb) if with_input_grads else (),  # stage 0 only
        )
        carry = _varying(carry, stage_axis)

        def tick(carry, t):
            received_x, received_g, stash, grads, head_grads, loss, input_grads = carry
            fwd_mb = forward_microbatch(t, stage)
            x = _first_stage_input(
                stage, inputs_mb, jnp.clip(fwd_mb, 0, num_microbatches - 1), received_x
            )
            y = stage_fn(params, x)
            # Unconditional write is safe: the slot's previous micro-batch finished its backward
            # (see stash_size_1f1b), and out-of-range micro-batches land in unused slots.
            stash = jax.tree.map(
                lambda buf, v: jax.lax.dynamic_update_index_in_dim(buf, v, fwd_mb % stash_size, 0),
                stash, x,
            )
            # Backward slot: recompute the stage from its stored input, pull back the cotangent
            # (the loss's on the last stage, the next stage's elsewhere).
            bwd_mb = backward_microbatch_1f1b(t, stage, num_stages)
            active = (bwd_mb >= 0) & (bwd_mb < num_microbatches)
            bwd_index = jnp.clip(bwd_mb, 0, num_microbatches - 1)
            (_, mb_loss), pullback = jax.vjp(
                functools.partial(stage_and_loss, targets=_microbatch(targets_mb, bwd_index)),
                params, head_params, _take(stash, bwd_mb % stash_size),
            )
            g_out = _where(active & (stage != last), received_g, _zeros_like(y))
            g_loss = jnp.where(active & (stage == last), 1.0, 0.0).astype(mb_loss.dtype)
            d_params, d_head, d_x = pullback((g_out, g_loss))
            grads = jax.tree.map(lambda a, d: a + jnp.where(active, d, 0), grads, d_params)
            on_last = active & (stage == last)
            head_grads = jax.tree.map(lambda a, d: a + jnp.where(on_last, d, 0), head_grads, d_head)
            loss = loss + jnp.where(on_last, mb_loss, 0).astype(loss.dtype)
            d_x = _where(active, d_x, _zeros_like(d_x))
            if with_input_grads:
                old = _microbatch(input_grads, bwd_index)
                input_grads = _set_microbatch(
                    input_grads, bwd_index, _where(active & (stage == 0), d_x, old)
                )
            sent_x = jax.lax.ppermute(y, stage_axis, _ring(num_stages, 1))
            sent_g = jax.lax.ppermute(d_x, stage_axis, _ring(num_stages, -1))
            return (sent_x, sent_g, stash, grads, head_grads, loss, input_grads), None

        ticks = jnp.arange(num_ticks(ONE_F_ONE_B, num_stages, num_microbatches))
        (_, _, _, grads, head_grads, loss, input_grads), _ = jax.lax.scan(tick, carry, ticks)
        return (
            jax.lax.psum(loss, stage_axis),
            jax.tree.map(lambda g: g[None], grads),
            jax.lax.psum(head_grads, stage_axis),
            jax.tree.map(lambda g: g[None], input_grads),
        )

    pipelined = jax.shard_map(
        program,
        mesh=mesh,
        in_specs=(PartitionSpec(stage_axis), PartitionSpec(), PartitionSpec(), PartitionSpec()),
        out_specs=(PartitionSpec(), PartitionSpec(stage_axis), PartitionSpec(),
                   PartitionSpec(stage_axis)),
        axis_names={stage_axis},
    )

    def run(stage_params, head_params, inputs_mb, targets_mb):
        loss, grads, head_grads, input_grads = pipelined(
            stage_params, head_params, inputs_mb, targets_mb
        )
        # Only stage 0's input cotangents are real; taking its shard moves just that one.
        input_grads = jax.tree.map(lambda g: g[0], input_grads) if with_input_grads else None
        return loss, grads, head_grads, input_grads

    return run
