"""The per-stage programs of `parallel.pipeline`: what every stage runs under `jax.shard_map`.

Both programs are a `lax.scan` over the ticks of `parallel.pipeline_schedule`; at each tick every
stage runs its op, then sends its activation to the next stage and, under 1F1B, its input
cotangent to the previous one, with `lax.ppermute` (outside any branch: every device takes part).

GPipe's forward runs the stage on every tick, idle ticks on placeholders whose results are never
read: its backward is `jax.grad` of the scan. 1F1B picks its op with a `lax.switch` on the
stage's own table entry. Stages take different branches in the same tick, but the devices of
one stage (its `data` / `model` sub-mesh) always take the same one, and the collectives XLA
adds for those automatic axes have replica groups inside that sub-mesh (checked in the compiled
HLO on jaxlib 0.10.2), so no collective waits on a device that skipped it.

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
    IDLE,
    ONE_F_ONE_B,
    num_ticks,
    schedule_table,
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
            microbatch = jnp.clip(t - stage, 0, num_microbatches - 1)  # F(i) at i + s
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

# Op codes of a stage-tick (the `lax.switch` branch index).
_IDLE_OP, _FORWARD_OP, _BACKWARD_OP, _LAST_BACKWARD_OP = 0, 1, 2, 3
SWITCH, MASKED = "switch", "masked"
STAGE_OPS = ("auto", SWITCH, MASKED)


def resolve_stage_ops(stage_ops: str, mesh: Mesh, stage_axis: str) -> str:
    """"switch" or "masked" for `stage_ops` ("auto": "switch" when no other mesh axis has more
    than one device, so no collective of another axis can sit inside a branch)."""
    if stage_ops not in STAGE_OPS:
        raise ValueError(f"unknown stage_ops {stage_ops!r}; valid: {STAGE_OPS}")
    if stage_ops != "auto":
        return stage_ops
    others = {name: size for name, size in mesh.shape.items() if name != stage_axis}
    return SWITCH if all(size == 1 for size in others.values()) else MASKED


def one_f_one_b(stage_fn: Callable, head_loss_fn: Callable, *, mesh: Mesh, stage_axis: str,
                num_stages: int, num_microbatches: int, with_input_grads: bool,
                stage_ops: str = SWITCH) -> Callable:
    """`(stage_params, head_params, inputs_mb, targets_mb) -> (loss, stage_grads, head_grads,
    input_grads_mb or None)`: the 1F1B scan under shard_map.

    Each tick, stage s looks up its entry of `schedule_table("1f1b", p, m)` and runs one op in
    a `lax.switch`: idle; forward of micro-batch i (its input kept in slot i % p of a ring
    buffer of p stage inputs); backward of micro-batch i through `jax.vjp` of the stage,
    recomputed from the stored input (on the last stage, of stage + `head_loss_fn`, the mean
    loss of one micro-batch; micro-batch losses are averaged). The branch taken differs between
    stages but never between the devices of one stage, so collectives of the automatic axes
    inside a branch only involve devices that take it. Then activations go one stage forward,
    cotangents one stage back, with `ppermute`.

    `stage_ops="masked"` runs the forward and the backward (with the head) on every stage every
    tick and keeps the scheduled one: the same schedule and memory, about twice the compute per
    tick, for stage programs whose automatic-axis resharding lowers to collective-permutes.
    XLA's runtime waits for every device of the program at a collective-permute (not only the
    pairs), so one inside a branch that the other stages skip hangs (on CPU, an abort after 40 s
    of rendezvous timeout). All-reduces and all-gathers carry replica groups within a stage's
    sub-mesh and are safe in "switch". Example of a collective-permute: splitting the zoo
    Transformer's fused QKV projection whose columns are sharded over `model`.
    """
    table = schedule_table(ONE_F_ONE_B, num_stages, num_microbatches)
    stash_size = stash_size_1f1b(num_stages)
    last = num_stages - 1
    scale = 1.0 / num_microbatches

    def stage_and_loss(params, head_params, x, targets):
        y = stage_fn(params, x)
        return y, head_loss_fn(head_params, y, targets) * scale

    def program(stage_params, head_params, inputs_mb, targets_mb):
        params = jax.tree.map(lambda a: a[0], stage_params)
        stage = jax.lax.axis_index(stage_axis)
        inputs_mb, targets_mb, head_params = _varying(
            (inputs_mb, targets_mb, head_params), stage_axis
        )
        placeholder_x = jax.tree.map(lambda x: jnp.zeros_like(x[:, 0]), inputs_mb)
        zero_loss = jnp.zeros((), jnp.float32)

        def zeros_out():
            # Every branch returns (y, d_params, d_head, d_x, loss) of these shapes.
            return _varying((placeholder_x, _zeros_like(params), _zeros_like(head_params),
                             placeholder_x, zero_loss), stage_axis)

        def idle(x, stashed, g_out, targets):
            return zeros_out()

        def forward(x, stashed, g_out, targets):
            y, d_params, d_head, d_x, loss = zeros_out()
            return _varying(stage_fn(params, x), stage_axis), d_params, d_head, d_x, loss

        def backward(x, stashed, g_out, targets):
            _, pullback = jax.vjp(stage_fn, params, stashed)
            d_params, d_x = pullback(g_out)
            y, _, d_head, _, loss = zeros_out()
            return y, d_params, d_head, d_x, loss

        def last_backward(x, stashed, g_out, targets):
            (_, loss), pullback = jax.vjp(
                functools.partial(stage_and_loss, targets=targets), params, head_params, stashed
            )
            d_params, d_head, d_x = pullback((_zeros_like(g_out), jnp.ones_like(loss)))
            y = zeros_out()[0]
            return y, d_params, d_head, d_x, loss.astype(jnp.float32)

        def masked(op, x, stashed, g_out, targets):
            """Forward and backward (head included: the cotangents pick the stage's role)
            computed on every stage, the scheduled op's results kept."""
            y = stage_fn(params, x)
            (_, loss), pullback = jax.vjp(
                functools.partial(stage_and_loss, targets=targets), params, head_params, stashed
            )
            on_last = stage == last
            g_y = _where(on_last, _zeros_like(g_out), g_out)
            d_params, d_head, d_x = pullback((g_y, jnp.where(on_last, 1.0, 0.0).astype(loss.dtype)))
            is_backward = op >= _BACKWARD_OP
            is_last_backward = op == _LAST_BACKWARD_OP

            def keep(pred, tree):
                return jax.tree.map(lambda v: jnp.where(pred, v, jnp.zeros_like(v)), tree)

            return _varying((keep(op == _FORWARD_OP, y), keep(is_backward, d_params),
                             keep(is_last_backward, d_head), keep(is_backward, d_x),
                             keep(is_last_backward, loss.astype(jnp.float32))), stage_axis)

        carry = _varying((
            placeholder_x,  # inbox: the activation received from the previous stage, not yet run
            placeholder_x,  # cotangent received from the next stage at the end of the last tick
            jax.tree.map(lambda x: jnp.zeros((stash_size, *x.shape), x.dtype), placeholder_x),
            _zeros_like(params),  # stage gradient accumulator
            _zeros_like(head_params),  # head gradient accumulator (last stage only)
            zero_loss,  # loss accumulator (last stage only)
            _zeros_like(inputs_mb) if with_input_grads else (),  # stage 0 only
        ), stage_axis)

        def tick(carry, rows):
            inbox, received_g, stash, grads, head_grads, loss, input_grads = carry
            forward_row, backward_row = rows
            fwd_mb, bwd_mb = forward_row[stage], backward_row[stage]
            is_forward, is_backward = fwd_mb != IDLE, bwd_mb != IDLE
            op = jnp.where(is_forward, _FORWARD_OP, jnp.where(
                is_backward, jnp.where(stage == last, _LAST_BACKWARD_OP, _BACKWARD_OP), _IDLE_OP))
            fwd_index = jnp.maximum(fwd_mb, 0)
            bwd_index = jnp.maximum(bwd_mb, 0)
            x = _first_stage_input(stage, inputs_mb, fwd_index, inbox)
            stashed = _take(stash, bwd_index % stash_size)
            operands = (x, stashed, received_g, _microbatch(targets_mb, bwd_index))
            if stage_ops == MASKED:
                y, d_params, d_head, d_x, mb_loss = masked(op, *operands)
            else:
                y, d_params, d_head, d_x, mb_loss = jax.lax.switch(
                    op, (idle, forward, backward, last_backward), *operands)
            # Only the slot of a forwarded micro-batch changes (its predecessor in the slot has
            # finished its backward: see stash_size_1f1b).
            slot = fwd_index % stash_size
            stash = jax.tree.map(
                lambda buf, v: jax.lax.dynamic_update_index_in_dim(
                    buf, jnp.where(is_forward, v, buf[slot]), slot, 0), stash, x)
            grads = jax.tree.map(jnp.add, grads, d_params)
            head_grads = jax.tree.map(jnp.add, head_grads, d_head)
            loss = loss + mb_loss
            if with_input_grads:
                old = _microbatch(input_grads, bwd_index)
                input_grads = _set_microbatch(
                    input_grads, bwd_index, _where(is_backward & (stage == 0), d_x, old)
                )
            sent_x = jax.lax.ppermute(y, stage_axis, _ring(num_stages, 1))
            received_g = jax.lax.ppermute(d_x, stage_axis, _ring(num_stages, -1))
            # Keep an arriving activation only when the previous stage ran a forward this tick.
            arrived = (stage > 0) & (forward_row[(stage - 1) % num_stages] != IDLE)
            inbox = _where(arrived, sent_x, inbox)
            return (inbox, received_g, stash, grads, head_grads, loss, input_grads), None

        rows = (jnp.asarray(table.forward), jnp.asarray(table.backward))
        (_, _, _, grads, head_grads, loss, input_grads), _ = jax.lax.scan(tick, carry, rows)
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
