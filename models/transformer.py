"""A small causal pre-LayerNorm Transformer language model (flax NNX) with remat hooks.

Sub-computations carry `jax.ad_checkpoint.checkpoint_name` tags so remat policies can keep or
recompute them by name (see `parallel.remat`):

  "attn_qkv"    the fused query/key/value projection
  "attn_out"    attention output after its projection
  "mlp_hidden"  the MLP's expanded hidden activations
  "mlp_out"     the MLP output projection
  "block_out"   each block's output (the residual stream)

Each block can be rematerialized on its own (`remat=True` or a per-block tuple), under a named
policy, without changing any value or gradient:

    net = Functional(lambda rngs: TransformerLM(vocab_size=97, seq_len=32, remat=True,
                                                remat_policy="names:attn_out", rngs=rngs))
    logits_BLV = net.apply(net.init(key), tokens_BL)
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from parallel import remat as remat_lib

CHECKPOINT_NAMES = ("attn_qkv", "attn_out", "mlp_hidden", "mlp_out", "block_out")


class CausalSelfAttention(nnx.Module):
    """Multi-head causal self-attention with a fused QKV projection."""

    def __init__(self, d_model: int, num_heads: int, *, rngs: nnx.Rngs):
        if d_model % num_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.qkv = nnx.Linear(d_model, 3 * d_model, rngs=rngs)
        self.out = nnx.Linear(d_model, d_model, rngs=rngs)

    def __call__(self, x_BLD: jax.Array) -> jax.Array:
        batch, length, d_model = x_BLD.shape
        head_dim = d_model // self.num_heads
        qkv = checkpoint_name(self.qkv(x_BLD), "attn_qkv")
        q_BLHK, k_BLHK, v_BLHK = jnp.split(
            qkv.reshape(batch, length, 3 * self.num_heads, head_dim), 3, axis=2
        )
        scores_BHLL = jnp.einsum("blhk,bmhk->bhlm", q_BLHK, k_BLHK) / jnp.sqrt(head_dim)
        causal_LL = jnp.tril(jnp.ones((length, length), dtype=bool))
        scores_BHLL = jnp.where(causal_LL, scores_BHLL, jnp.finfo(scores_BHLL.dtype).min)
        weights_BHLL = jax.nn.softmax(scores_BHLL, axis=-1)
        attended_BLHK = jnp.einsum("bhlm,bmhk->blhk", weights_BHLL, v_BLHK)
        return checkpoint_name(self.out(attended_BLHK.reshape(batch, length, d_model)), "attn_out")


class MLPBlock(nnx.Module):
    """Position-wise MLP: Linear -> GELU -> Linear."""

    def __init__(self, d_model: int, hidden: int, *, rngs: nnx.Rngs):
        self.up = nnx.Linear(d_model, hidden, rngs=rngs)
        self.down = nnx.Linear(hidden, d_model, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        hidden = checkpoint_name(jax.nn.gelu(self.up(x)), "mlp_hidden")
        return checkpoint_name(self.down(hidden), "mlp_out")


class TransformerBlock(nnx.Module):
    """Pre-LN block: x + attn(LN(x)), then + mlp(LN(x))."""

    def __init__(self, d_model: int, num_heads: int, mlp_ratio: int, *, rngs: nnx.Rngs):
        self.attn_norm = nnx.LayerNorm(d_model, rngs=rngs)
        self.attn = CausalSelfAttention(d_model, num_heads, rngs=rngs)
        self.mlp_norm = nnx.LayerNorm(d_model, rngs=rngs)
        self.mlp = MLPBlock(d_model, mlp_ratio * d_model, rngs=rngs)

    def __call__(self, x_BLD: jax.Array) -> jax.Array:
        x_BLD = x_BLD + self.attn(self.attn_norm(x_BLD))
        x_BLD = x_BLD + self.mlp(self.mlp_norm(x_BLD))
        return checkpoint_name(x_BLD, "block_out")


def _apply_block(graphdef, state, x_BLD):
    return nnx.merge(graphdef, state)(x_BLD)


class TransformerLM(nnx.Module):
    """Token + learned position embeddings, `num_layers` pre-LN blocks, final LN, untied readout.

    Args:
      vocab_size: number of token ids.
      seq_len: maximum sequence length (size of the position table).
      d_model, num_heads, num_layers, mlp_ratio: the usual sizes.
      remat: rematerialize every block (bool) or block i when remat[i] (sequence of bools).
      remat_policy: `parallel.remat` policy for rematerialized blocks ("full", "dots",
        "names:attn_out,mlp_out", ...).
    """

    def __init__(
        self,
        vocab_size: int,
        seq_len: int,
        *,
        d_model: int = 64,
        num_heads: int = 4,
        num_layers: int = 2,
        mlp_ratio: int = 4,
        remat: bool | Sequence[bool] = False,
        remat_policy: str = "full",
        rngs: nnx.Rngs,
    ):
        flags = (bool(remat),) * num_layers if isinstance(remat, bool) else tuple(remat)
        if len(flags) != num_layers:
            raise ValueError(
                f"remat needs one flag per block ({num_layers}); got {len(flags)}: {remat!r}"
            )
        remat_lib.parse_policy(remat_policy)  # fail at construction on a bad policy name
        self.remat_flags = flags
        self.remat_policy = remat_policy
        self.seq_len = seq_len
        self.token_embed = nnx.Embed(vocab_size, d_model, rngs=rngs)
        self.position_embed = nnx.Embed(seq_len, d_model, rngs=rngs)
        self.blocks = nnx.List(
            [TransformerBlock(d_model, num_heads, mlp_ratio, rngs=rngs) for _ in range(num_layers)]
        )
        self.final_norm = nnx.LayerNorm(d_model, rngs=rngs)
        self.readout = nnx.Linear(d_model, vocab_size, rngs=rngs)

    def __call__(self, tokens_BL: jax.Array) -> jax.Array:
        length = tokens_BL.shape[1]
        if length > self.seq_len:
            raise ValueError(f"sequence length {length} exceeds the model's seq_len {self.seq_len}")
        x_BLD = self.token_embed(tokens_BL) + self.position_embed(jnp.arange(length))[None]
        for block, use_remat in zip(self.blocks, self.remat_flags, strict=True):
            if use_remat:
                # Remat a pure function of the block's state: jax.checkpoint sees arrays only.
                graphdef, state = nnx.split(block)
                apply = remat_lib.checkpoint(_apply_block, self.remat_policy, static_argnums=(0,))
                x_BLD = apply(graphdef, state, x_BLD)
            else:
                x_BLD = block(x_BLD)
        return self.readout(self.final_norm(x_BLD))
