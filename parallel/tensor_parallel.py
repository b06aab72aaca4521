"""Megatron-style tensor (model) parallelism for Transformer blocks written as pure functions.

The MLP splits its hidden dimension over the `model` axis: the first weight column-wise, the
second row-wise, so each device computes its slice of the hidden activations with no
communication and one all-reduce sums the partial outputs (Shoeybi et al. 2019). Attention splits
its heads the same way: each device owns `num_heads / model` heads (their q, k, v columns and
their rows of the output projection), and one all-reduce sums the heads' contributions.

The math is written once (`mlp`, `attention`, `block`, `lm_logits`) over plain param dicts, with
two hooks that the three ways of running it fill in:

- reference (one device): no hooks;
- `shard_map` form (`shard_map_lm_loss`): each device runs the same functions on its local
  slices and `reduce` is the explicit `lax.psum` over `model`;
- annotation form (`annotated_lm_loss`): params placed with `param_shardings` and `constrain`
  pins activations with `with_sharding_constraint`; XLA inserts the collectives.

    params = init_lm(key, LMConfig(vocab=64, dim=32, num_heads=4, hidden=64, num_layers=2))
    mesh = make_mesh({"data": 2, "model": 4})
    loss = shard_map_lm_loss(mesh)(params, batch)        # == lm_loss(params, batch)
    step = make_tp_train_step(annotated_lm_loss(mesh), tx, mesh, params)
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from parallel import data_parallel
from parallel.mesh import DATA, MODEL, axis_size

PyTree = Any
Hook = Callable[[jax.Array, str], jax.Array]  # (activation, role) -> activation


def _no_constraint(x: jax.Array, role: str) -> jax.Array:
    return x


def _no_reduce(x: jax.Array) -> jax.Array:
    return x


class LMConfig(NamedTuple):
    """Shapes of the small decoder-only Transformer used to exercise tensor parallelism."""

    vocab: int = 64
    dim: int = 32
    num_heads: int = 4
    head_dim: int = 8
    hidden: int = 64
    num_layers: int = 2
    max_len: int = 16


# ----------------------------------------------------------------------------------------------
# The math, once


def layer_norm(params: PyTree, x: jax.Array) -> jax.Array:
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.var(x, axis=-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + 1e-6) * params["scale"] + params["bias"]


def mlp(params: PyTree, x_BLD: jax.Array, *, reduce=_no_reduce, constrain: Hook = _no_constraint):
    """Column-parallel `w_in` [D, F], row-parallel `w_out` [F, D]; `reduce` sums the partial
    outputs over the devices that hold slices of F (identity when F is whole)."""
    hidden_BLF = jax.nn.gelu(x_BLD @ params["w_in"] + params["b_in"])
    hidden_BLF = constrain(hidden_BLF, "mlp_hidden")
    return reduce(hidden_BLF @ params["w_out"]) + params["b_out"]


def attention(
    params: PyTree, x_BLD: jax.Array, *, reduce=_no_reduce, constrain: Hook = _no_constraint
):
    """Causal multi-head attention; heads are independent, so a device holding a subset of
    them (`w_q/w_k/w_v` [D, H, K], `w_o` [H, K, D]) computes their full contribution."""
    q_BLHK = constrain(jnp.einsum("bld,dhk->blhk", x_BLD, params["w_q"]), "heads")
    k_BLHK = constrain(jnp.einsum("bld,dhk->blhk", x_BLD, params["w_k"]), "heads")
    v_BLHK = constrain(jnp.einsum("bld,dhk->blhk", x_BLD, params["w_v"]), "heads")
    length = x_BLD.shape[1]
    scores_BHLM = jnp.einsum("blhk,bmhk->bhlm", q_BLHK, k_BLHK) / jnp.sqrt(q_BLHK.shape[-1])
    causal = jnp.tril(jnp.ones((length, length), bool))
    scores_BHLM = jnp.where(causal, scores_BHLM, jnp.finfo(scores_BHLM.dtype).min)
    out_BLHK = jnp.einsum("bhlm,bmhk->blhk", jax.nn.softmax(scores_BHLM, axis=-1), v_BLHK)
    out_BLHK = constrain(out_BLHK, "heads")
    return reduce(jnp.einsum("blhk,hkd->bld", out_BLHK, params["w_o"])) + params["b_o"]


def block(params: PyTree, x_BLD: jax.Array, *, reduce=_no_reduce, constrain=_no_constraint):
    """Pre-LayerNorm Transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""
    hooks = dict(reduce=reduce, constrain=constrain)
    x_BLD = x_BLD + attention(params["attn"], layer_norm(params["ln1"], x_BLD), **hooks)
    x_BLD = constrain(x_BLD, "residual")
    x_BLD = x_BLD + mlp(params["mlp"], layer_norm(params["ln2"], x_BLD), **hooks)
    return constrain(x_BLD, "residual")


def lm_logits(params: PyTree, tokens_BL: jax.Array, *, reduce=_no_reduce, constrain=_no_constraint):
    """Next-token logits [B, L, V] of the decoder-only LM (tied input/output embedding)."""
    x_BLD = params["embed"][tokens_BL] + params["pos"][: tokens_BL.shape[1]]
    x_BLD = constrain(x_BLD, "residual")
    for block_params in params["blocks"]:
        x_BLD = block(block_params, x_BLD, reduce=reduce, constrain=constrain)
    return layer_norm(params["ln_f"], x_BLD) @ params["embed"].T


def lm_loss(params: PyTree, batch: PyTree, **hooks) -> jax.Array:
    """Mean next-token cross-entropy; `batch = {"tokens": int [B, L]}`."""
    tokens_BL = batch["tokens"]
    logits_BLV = lm_logits(params, tokens_BL[:, :-1], **hooks)
    return optax.softmax_cross_entropy_with_integer_labels(logits_BLV, tokens_BL[:, 1:]).mean()


def init_lm(key: jax.Array, config: LMConfig | None = None) -> PyTree:
    """Parameters of the LM as a plain dict (scaled normal init, LayerNorm at identity)."""
    c = config or LMConfig()
    keys = iter(jax.random.split(key, 2 + 6 * c.num_layers))
    normal = lambda shape, fan_in: jax.random.normal(next(keys), shape) / jnp.sqrt(fan_in)
    norm = lambda: {"scale": jnp.ones(c.dim), "bias": jnp.zeros(c.dim)}
    blocks = []
    for _ in range(c.num_layers):
        heads = (c.dim, c.num_heads, c.head_dim)
        blocks.append({
            "ln1": norm(),
            "attn": {"w_q": normal(heads, c.dim), "w_k": normal(heads, c.dim),
                     "w_v": normal(heads, c.dim),
                     "w_o": normal((c.num_heads, c.head_dim, c.dim), c.num_heads * c.head_dim),
                     "b_o": jnp.zeros(c.dim)},
            "ln2": norm(),
            "mlp": {"w_in": normal((c.dim, c.hidden), c.dim), "b_in": jnp.zeros(c.hidden),
                    "w_out": normal((c.hidden, c.dim), c.hidden), "b_out": jnp.zeros(c.dim)},
        })  # fmt: skip
    return {
        "embed": normal((c.vocab, c.dim), 1.0) * 0.5,
        "pos": normal((c.max_len, c.dim), 1.0) * 0.1,
        "blocks": blocks,
        "ln_f": norm(),
    }


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
    mesh: Mesh, *, data_axis: str = DATA, model_axis: str = MODEL
) -> Callable[[PyTree, PyTree], jax.Array]:
    """`loss(params, batch)` run per device: local heads and hidden slices, `psum` over
    `model_axis` after each attention and MLP, batch split and loss averaged over `data_axis`.
    Differentiable (wrap in `jax.grad`) and jittable; equals `lm_loss`."""
    data = axis_size(mesh, data_axis)
    reduce = lambda x: jax.lax.psum(x, model_axis)

    def per_device(params, batch):
        return jax.lax.pmean(lm_loss(params, batch, reduce=reduce), data_axis)

    def loss(params, batch):
        check_divisible(params, mesh, model_axis)
        if batch["tokens"].shape[0] % data:
            raise ValueError(
                f"batch size {batch['tokens'].shape[0]} is not divisible by the {data_axis!r} "
                f"axis size {data}"
            )
        specs = param_specs(params, model_axis)
        sharded = jax.shard_map(
            per_device, mesh=mesh, in_specs=(specs, P(data_axis)), out_specs=P()
        )
        return sharded(params, batch)

    return loss


# ----------------------------------------------------------------------------------------------
# Form 2: sharding annotations, collectives left to XLA


def activation_constraints(
    mesh: Mesh, *, data_axis: str = DATA, model_axis: str = MODEL
) -> Hook:
    """`constrain(x, role)` pinning Megatron's activation layout: hidden units and heads split
    over `model_axis`, the residual stream replicated over it; batch split over `data_axis`."""
    layouts = {
        "mlp_hidden": P(data_axis, None, model_axis),
        "heads": P(data_axis, None, model_axis, None),
        "residual": P(data_axis, None, None),
    }
    return lambda x, role: jax.lax.with_sharding_constraint(
        x, NamedSharding(mesh, layouts[role])
    )


def annotated_lm_loss(
    mesh: Mesh, *, data_axis: str = DATA, model_axis: str = MODEL
) -> Callable[[PyTree, PyTree], jax.Array]:
    """`lm_loss` with activation sharding constraints; use under `jit` with params placed by
    `param_shardings` (as `make_tp_train_step` does). Equals `lm_loss`."""
    constrain = activation_constraints(mesh, data_axis=data_axis, model_axis=model_axis)
    return lambda params, batch: lm_loss(params, batch, constrain=constrain)


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
