"""parallel.remat: every policy gives the no-remat gradients; bad input fails clearly.

Memory figures are compared within one compiled family of programs (never wall times).
"""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

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
WIDTH, DEPTH, BATCH = 16, 6, 8


def mlp_block(layer_params, x_BD):
    """Pre-norm residual MLP block with the tags the models place."""
    w_in, w_out = layer_params
    h = x_BD - jnp.mean(x_BD, axis=-1, keepdims=True)
    h = checkpoint_name(jnp.tanh(h @ w_in), "mlp_hidden")
    return x_BD + checkpoint_name(h @ w_out, "mlp_out")


def init_mlp(key, depth=DEPTH, width=WIDTH):
    k_in, k_out = jax.random.split(key)
    scale = 1.0 / np.sqrt(width)
    return (
        scale * jax.random.normal(k_in, (depth, width, 4 * width)),
        scale * jax.random.normal(k_out, (depth, 4 * width, width)),
    )


def mlp_loss(policy):
    block = remat.checkpoint(mlp_block, policy, prevent_cse=False)

    def loss(params, x_BD):
        def body(x, layer_params):
            return block(layer_params, x), None

        y, _ = jax.lax.scan(body, x_BD, params)
        return jnp.mean(y**2)

    return loss


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
