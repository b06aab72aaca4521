"""A small decoder-only Transformer LM written as pure functions over a plain param dict.

The math is written once (`mlp`, `attention`, `block`, `lm_logits`, `lm_loss`) with two hooks,
so that parallel code can run the same functions sharded without this file knowing about meshes:

- `reduce(x)`: applied to each attention and MLP output before its bias; identity on one device,
  `lax.psum` over the model axis when each device holds a slice of the heads / hidden units
  (`parallel.tensor_parallel.shard_map_lm_loss`);
- `constrain(x, role)`: applied to activations by role ("mlp_hidden", "heads", "residual");
  identity on one device, `with_sharding_constraint` under sharding annotations
  (`parallel.tensor_parallel.annotated_lm_loss`).

The flax NNX `models.transformer.TransformerLM` is the task zoo's LM (fused QKV, untied readout,
remat tags); this one keeps heads on their own axis ([D, H, K]) so Megatron's head split is one
PartitionSpec, and has no framework state at all.

    params = init_lm(jax.random.key(0), LMConfig(vocab=64, dim=32, num_heads=4, num_layers=2))
    loss = lm_loss(params, {"tokens": tokens_BL})            # one device, no hooks
    loss = shard_map_lm_loss(lm_loss, mesh)(params, batch)   # parallel.tensor_parallel: same value
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

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
    """Mean next-token cross-entropy; `batch = {"tokens": int [B, L]}`; `hooks`: `reduce=`,
    `constrain=` (see the module docstring)."""
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
