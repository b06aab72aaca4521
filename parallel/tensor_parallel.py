"""Megatron-style tensor (model) parallelism for Transformer blocks written as pure functions.

The MLP splits its hidden dimension over the `model` axis: the first weight column-wise, the
second row-wise, so each device computes its slice of the hidden activations with no
communication and one all-reduce sums the partial outputs (Shoeybi et al. 2019). Attention splits
its heads the same way: each device owns `num_heads / model` heads (their q, k, v columns and
their rows of the output projection), and one all-reduce sums the heads' contributions.

The model is not here: any loss `loss_fn(params, batch, *, reduce=..., constrain=...)` written
once with two hooks (e.g. `models.functional_lm.lm_loss`) runs three ways:

- reference (one device): no hooks;
- `shard_map` form (`shard_map_lm_loss`): each device runs the loss on its local slices and
  `reduce` is the explicit `lax.psum` over `model`;
- annotation form (`annotated_lm_loss`): params placed with `param_shardings` and `constrain`
  pins activations with `with_sharding_constraint`; XLA inserts the collectives.

Params follow the functional LM's naming (`blocks/i/attn/w_q`, `blocks/i/mlp/w_in`, ...); for
other param trees (the task zoo's flax Transformer) `shardings_from_rules` picks specs by path.

    from models.functional_lm import LMConfig, init_lm, lm_loss
    params = init_lm(key, LMConfig(vocab=64, dim=32, num_heads=4, hidden=64, num_layers=2))
    mesh = make_mesh({"data": 2, "model": 4})
    loss = shard_map_lm_loss(lm_loss, mesh)(params, batch)     # == lm_loss(params, batch)
    step = make_tp_train_step(annotated_lm_loss(lm_loss, mesh), tx, mesh, params)
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from parallel import data_parallel
from parallel.mesh import DATA, MODEL, axis_size

PyTree = Any
Hook = Callable[[jax.Array, str], jax.Array]  # (activation, role) -> activation
# loss_fn(params, batch, *, reduce=..., constrain=...) -> scalar
HookedLoss = Callable[..., jax.Array]


def _check_loss_and_mesh(loss_fn: Any, mesh: Any, name: str) -> None:
    # `mesh` defaults to None only so that the old one-argument call `name(mesh)` gets this
    # message instead of Python's "missing argument 'mesh'".
    if isinstance(loss_fn, Mesh) or not callable(loss_fn) or not isinstance(mesh, Mesh):
        raise TypeError(
            f"{name}(loss_fn, mesh, ...) takes the model's loss first, a callable "
            "loss_fn(params, batch, *, reduce=..., constrain=...) such as "
            f"models.functional_lm.lm_loss, then a Mesh; got {type(loss_fn).__name__}, "
            f"{type(mesh).__name__}"
        )


# ----------------------------------------------------------------------------------------------
# Where every parameter lives: Megatron partition specs


_SHARDED_SPECS = {
    "w_in": P(None, MODEL), "b_in": P(MODEL), "w_out": P(MODEL, None),
    "w_q": P(None, MODEL, None), "w_k": P(None, MODEL, None), "w_v": P(None, MODEL, None),
    "w_o": P(MODEL, None, None),
}  # fmt: skip


def param_specs(params: PyTree, model_axis: str = MODEL) -> PyTree:
    """PartitionSpecs: MLP hidden and attention heads split over `model_axis`, the rest
    (embeddings, LayerNorms, output biases) replicated."""

    def spec(path, _):
        name = getattr(path[-1], "key", None)
        base = _SHARDED_SPECS.get(name, P())
        return P(*(model_axis if axis == MODEL else axis for axis in base))

    return jax.tree_util.tree_map_with_path(spec, params)


def check_divisible(params: PyTree, mesh: Mesh, model_axis: str = MODEL) -> None:
    """ValueError naming the sizes when heads or MLP hidden units do not split evenly."""
    model = axis_size(mesh, model_axis)
    for index, block_params in enumerate(params["blocks"]):
        heads = block_params["attn"]["w_q"].shape[1]
        hidden = block_params["mlp"]["w_in"].shape[1]
        if heads % model:
            raise ValueError(
                f"block {index}: num_heads={heads} is not divisible by the {model_axis!r} axis "
                f"size {model}; use a head count that is a multiple of {model}"
            )
        if hidden % model:
            raise ValueError(
                f"block {index}: MLP hidden size {hidden} is not divisible by the {model_axis!r} "
                f"axis size {model}"
            )


def param_shardings(params: PyTree, mesh: Mesh, model_axis: str = MODEL) -> PyTree:
    """`NamedSharding`s of `param_specs` on `mesh`, after checking divisibility."""
    check_divisible(params, mesh, model_axis)
    return jax.tree.map(lambda s: NamedSharding(mesh, s), param_specs(params, model_axis))


# ----------------------------------------------------------------------------------------------
# Form 1: shard_map with explicit collectives


def shard_map_lm_loss(
    loss_fn: HookedLoss, mesh: Mesh | None = None, *, data_axis: str = DATA, model_axis: str = MODEL
) -> Callable[[PyTree, PyTree], jax.Array]:
    """`loss_fn(params, batch)` run per device: local heads and hidden slices, `psum` over
    `model_axis` after each attention and MLP (the loss's `reduce=` hook), batch split and loss
    averaged over `data_axis`. Differentiable (wrap in `jax.grad`) and jittable; equals
    `loss_fn(params, batch)` on one device.

        loss = shard_map_lm_loss(models.functional_lm.lm_loss, mesh)(params, batch)
    """
    _check_loss_and_mesh(loss_fn, mesh, "shard_map_lm_loss")
    data = axis_size(mesh, data_axis)
    reduce = lambda x: jax.lax.psum(x, model_axis)

    def per_device(params, batch):
        return jax.lax.pmean(loss_fn(params, batch, reduce=reduce), data_axis)

    def loss(params, batch):
        check_divisible(params, mesh, model_axis)
        batch_size = jnp.shape(jax.tree.leaves(batch)[0])[0]
        if batch_size % data:
            raise ValueError(
                f"batch size {batch_size} is not divisible by the {data_axis!r} axis size {data}"
            )
        specs = param_specs(params, model_axis)
        sharded = jax.shard_map(
            per_device, mesh=mesh, in_specs=(specs, P(data_axis)), out_specs=P()
        )
        return sharded(params, batch)

    return loss


# ----------------------------------------------------------------------------------------------
# Form 2: sharding annotations, collectives left to XLA


def activation_constraints(mesh: Mesh, *, data_axis: str = DATA, model_axis: str = MODEL) -> Hook:
    """`constrain(x, role)` pinning Megatron's activation layout: hidden units and heads split
    over `model_axis`, the residual stream replicated over it; batch split over `data_axis`."""
    layouts = {
        "mlp_hidden": P(data_axis, None, model_axis),
        "heads": P(data_axis, None, model_axis, None),
        "residual": P(data_axis, None, None),
    }
    return lambda x, role: jax.lax.with_sharding_constraint(x, NamedSharding(mesh, layouts[role]))


def annotated_lm_loss(
    loss_fn: HookedLoss, mesh: Mesh | None = None, *, data_axis: str = DATA, model_axis: str = MODEL
) -> Callable[[PyTree, PyTree], jax.Array]:
    """`loss_fn` with activation sharding constraints (its `constrain=` hook); use under `jit`
    with params placed by `param_shardings` (as `make_tp_train_step` does). Equals `loss_fn`.

        step = make_tp_train_step(annotated_lm_loss(lm_loss, mesh), tx, mesh, params)
    """
    _check_loss_and_mesh(loss_fn, mesh, "annotated_lm_loss")
    constrain = activation_constraints(mesh, data_axis=data_axis, model_axis=model_axis)
    return lambda params, batch: loss_fn(params, batch, constrain=constrain)


def make_tp_train_step(
    loss_fn: Callable[[PyTree, PyTree], jax.Array],
    tx: optax.GradientTransformation,
    mesh: Mesh,
    params: PyTree,
    *,
    data_axis: str = DATA,
    model_axis: str = MODEL,
):
    """A jitted train step on a `data x model` mesh: params (and the param-shaped parts of the
    optimizer state) sharded Megatron-style, batch split over `data_axis`, shardings kept.

    Returns:
      `(params, opt_state, step)`: params and `tx.init` placed on `mesh`, and
      `step(params, opt_state, batch) -> (params, opt_state, loss)`.
    """
    shardings = param_shardings(params, mesh, model_axis)
    placed = jax.device_put(params, shardings)
    opt_state = data_parallel.init_opt_state(tx, placed, mesh)
    step = data_parallel.make_jit_train_step(
        loss_fn, tx, mesh, axis_name=data_axis, param_shardings=shardings
    )
    return placed, opt_state, step


# ----------------------------------------------------------------------------------------------
# Any model's params by path rules (e.g. the flax Transformer of the task zoo)


MEGATRON_RULES: tuple[tuple[str, P], ...] = (
    (r"attn/qkv/kernel$", P(None, MODEL)), (r"attn/qkv/bias$", P(MODEL)),
    (r"attn/out/kernel$", P(MODEL, None)),
    (r"mlp/up/kernel$", P(None, MODEL)), (r"mlp/up/bias$", P(MODEL)),
    (r"mlp/down/kernel$", P(MODEL, None)),
)  # fmt: skip
"""Megatron layout for param trees named like `models.transformer` (`blocks/0/attn/qkv/kernel`).
A fused [q | k | v] kernel split by columns is not head-aligned, so XLA adds a little
resharding there; the values are exact either way."""


def path_name(path) -> str:
    """`blocks/0/attn/qkv/kernel` for a jax key path."""
    parts = []
    for key in path:
        for attr in ("key", "idx", "name"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(str(key))
    return "/".join(parts)


def shardings_from_rules(
    params: PyTree, mesh: Mesh, rules: tuple[tuple[str, P], ...] = MEGATRON_RULES
) -> PyTree:
    """NamedShardings chosen by the first rule whose regex matches a leaf's path (replicated
    when none does); ValueError naming the leaf when a sharded dimension does not divide.

        shardings = shardings_from_rules(task.init(key), mesh)
        step = data_parallel.make_jit_train_step(task.loss, tx, mesh, param_shardings=shardings)
    """

    def one(path, leaf):
        name = path_name(path)
        spec = next((spec for pattern, spec in rules if re.search(pattern, name)), P())
        for dim, axis in enumerate(spec):
            if axis is None:
                continue
            size = axis_size(mesh, axis)
            if jnp.shape(leaf)[dim] % size:
                raise ValueError(
                    f"{name}: dimension {dim} of shape {jnp.shape(leaf)} is not divisible by "
                    f"the {axis!r} axis size {size}"
                )
        return NamedSharding(mesh, spec)

    return jax.tree_util.tree_map_with_path(one, params)
