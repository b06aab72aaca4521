"""parallel.remat.policies: every policy gives the no-remat gradients; bad input fails clearly."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.ad_checkpoint import checkpoint_name
from remat_problems import BATCH, WIDTH, init_mlp, mlp_block, mlp_loss

from parallel import remat

POLICIES = [
    "none",
    "full",
    "dots",
    "dots_no_batch",
    "names:mlp_hidden",
    "names:mlp_hidden,mlp_out",
    "offload:mlp_hidden",
]


@pytest.fixture(scope="module")
def mlp_problem():
    params = init_mlp(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (BATCH, WIDTH))
    reference = jax.jit(jax.value_and_grad(mlp_loss("none")))(params, x)
    return params, x, reference


@pytest.mark.parametrize("policy", POLICIES)
def test_scan_mlp_gradients_equal_no_remat(mlp_problem, policy):
    params, x, (ref_loss, ref_grads) = mlp_problem
    loss, grads = jax.jit(jax.value_and_grad(mlp_loss(policy)))(params, x)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
    for g, g_ref in zip(grads, ref_grads, strict=True):
        np.testing.assert_allclose(g, g_ref, rtol=1e-5, atol=1e-7)


def test_none_returns_fn_itself():
    assert remat.checkpoint(mlp_block, "none") is mlp_block


class Block(nnx.Module):
    def __init__(self, width, rngs):
        self.dense_in = nnx.Linear(width, 2 * width, rngs=rngs)
        self.dense_out = nnx.Linear(2 * width, width, rngs=rngs)

    def __call__(self, x):
        h = checkpoint_name(nnx.gelu(self.dense_in(x)), "mlp_hidden")
        return x + self.dense_out(h)


@pytest.mark.parametrize("policy", ["full", "dots", "names:mlp_hidden"])
def test_flax_block_through_split_merge(policy):
    """A flax NNX block used the library way: split to pytrees, checkpoint the pure apply."""
    graphdef, state = nnx.split(Block(WIDTH, nnx.Rngs(0)))
    x = jax.random.normal(jax.random.key(2), (BATCH, WIDTH))

    def apply(state, x):
        return nnx.merge(graphdef, state)(x)

    def loss(apply_fn, state):
        return jnp.sum(jnp.sin(apply_fn(state, apply_fn(state, x))))

    ref = jax.grad(lambda s: loss(apply, s))(state)
    got = jax.grad(lambda s: loss(remat.checkpoint(apply, policy), s))(state)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), got, ref)


def test_jax_policy_works_with_nnx_remat():
    block = Block(WIDTH, nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(2), (BATCH, WIDTH))
    remat_call = nnx.remat(lambda m, x: m(x), policy=remat.jax_policy("dots"))
    ref = nnx.grad(lambda m: jnp.sum(m(x) ** 2))(block)
    got = nnx.grad(lambda m: jnp.sum(remat_call(m, x) ** 2))(block)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), got, ref)


@pytest.mark.parametrize("bad", ["bogus", "Full", "names", "names:", "checkpoint_dots"])
def test_unknown_policy_lists_valid_ones(bad):
    with pytest.raises(ValueError, match="dots_no_batch"):
        remat.checkpoint(mlp_block, bad)


def test_policy_must_be_a_string():
    with pytest.raises(TypeError, match="policy must be a string"):
        remat.checkpoint(mlp_block, 3)


def test_names_that_tag_nothing_are_reported(mlp_problem):
    params, x, _ = mlp_problem
    with pytest.raises(ValueError, match=r"\['attn_qkv'\] tag nothing.*mlp_hidden"):
        jax.grad(mlp_loss("names:mlp_hidden,attn_qkv"))(params, x)


def test_tagged_names_sees_through_scan_cond_and_checkpoint():
    def fn(x):
        y = jax.lax.cond(x[0] > 0, lambda v: checkpoint_name(v, "in_cond"), lambda v: v, x)
        inner = jax.checkpoint(lambda v: checkpoint_name(jnp.sin(v), "in_remat"))
        y, _ = jax.lax.scan(lambda c, _: (inner(c), None), y, None, length=2)
        return checkpoint_name(y, "top")

    assert remat.tagged_names(fn, jnp.ones(3)) == {"in_cond", "in_remat", "top"}


def test_offload_needs_pinned_host_memory():
    memories = [types.SimpleNamespace(kind="device")]
    fake = types.SimpleNamespace(platform="fake", addressable_memories=lambda: memories)
    with pytest.raises(RuntimeError, match="pinned_host"):
        remat.require_host_offload(fake)
    # The CPU backend here has pinned host memory, so offload policies run (and the gradient
    # test above checks they are exact).
    remat.require_host_offload(jax.devices()[0])


# ----------------------------------------------------------------- a small attention block


def attention_block(layer_params, x_BTD):
    """Causal single-head attention + MLP, tagged with the Transformer's checkpoint names."""
    w_qkv, w_o, w_in, w_out = layer_params
    seq = x_BTD.shape[1]
    q, k, v = jnp.split(checkpoint_name(x_BTD @ w_qkv, "attn_qkv"), 3, axis=-1)
    scores_BTT = jnp.einsum("btd,bsd->bts", q, k) / np.sqrt(q.shape[-1])
    scores_BTT = jnp.where(jnp.tril(jnp.ones((seq, seq), bool)), scores_BTT, -1e9)
    attended = jnp.einsum("bts,bsd->btd", jax.nn.softmax(scores_BTT, axis=-1), v)
    x_BTD = x_BTD + checkpoint_name(attended @ w_o, "attn_out")
    h = checkpoint_name(jax.nn.gelu(x_BTD @ w_in), "mlp_hidden")
    return checkpoint_name(x_BTD + checkpoint_name(h @ w_out, "mlp_out"), "block_out")


def attention_loss(policy):
    block = remat.checkpoint(attention_block, policy, prevent_cse=False)

    def loss(params, x_BTD):
        y, _ = jax.lax.scan(lambda x, p: (block(p, x), None), x_BTD, params)
        return jnp.mean(y**2)

    return loss


@pytest.fixture(scope="module")
def attention_problem():
    depth, width, seq = 3, 8, 6
    keys = jax.random.split(jax.random.key(3), 5)
    shapes = [(width, 3 * width), (width, width), (width, 4 * width), (4 * width, width)]
    params = tuple(
        jax.random.normal(k, (depth, *s)) / np.sqrt(s[0])
        for k, s in zip(keys[:4], shapes, strict=True)
    )
    x = jax.random.normal(keys[4], (2, seq, width))
    return params, x, jax.jit(jax.grad(attention_loss("none")))(params, x)


ATTENTION_POLICIES = [
    "full",
    "dots",
    "dots_no_batch",
    "names:attn_qkv,attn_out,mlp_hidden,mlp_out,block_out",
    "offload:attn_qkv,mlp_hidden",
]


@pytest.mark.parametrize("policy", ATTENTION_POLICIES)
def test_attention_gradients_equal_no_remat(attention_problem, policy):
    params, x, ref_grads = attention_problem
    grads = jax.jit(jax.grad(attention_loss(policy)))(params, x)
    for g, g_ref in zip(grads, ref_grads, strict=True):
        np.testing.assert_allclose(g, g_ref, rtol=1e-5, atol=1e-6)
