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


# ----------------------------------------------------------------- memory and choose_policy

DEEP = 16


@pytest.fixture(scope="module")
def deep_mlp_args():
    """Shapes only: memory figures come from compilation, nothing runs."""
    params = jax.eval_shape(lambda: init_mlp(jax.random.key(0), DEEP, WIDTH))
    return params, jax.ShapeDtypeStruct((64, WIDTH), jnp.float32)


@pytest.fixture(scope="module")
def deep_mlp_stats(deep_mlp_args):
    return {p: remat.memory_stats(mlp_loss(p), *deep_mlp_args) for p in remat.DEFAULT_CANDIDATES}


def test_temp_memory_ordered_none_dots_full(deep_mlp_stats):
    temp = {p: s.temp_bytes for p, s in deep_mlp_stats.items()}
    assert temp["none"] >= temp["dots"] >= temp["full"], temp
    assert temp["none"] >= 2 * temp["full"], temp  # per-block full remat keeps only carries
    residual = {p: s.residual_bytes for p, s in deep_mlp_stats.items()}
    assert residual["none"] > residual["dots"] > residual["full"], residual


def test_memory_stats_lists_residuals_with_sources(deep_mlp_stats):
    none, full = deep_mlp_stats["none"], deep_mlp_stats["full"]
    # The gradient step's parameters and outputs do not depend on the policy.
    assert none.argument_bytes == full.argument_bytes and none.output_bytes == full.output_bytes
    params_bytes = 2 * DEEP * WIDTH * 4 * WIDTH * 4
    assert {r.nbytes for r in full.residuals if r.is_argument} == {params_bytes // 2}
    # Without remat the scan keeps per-layer hidden activations (width 4 * WIDTH: the tanh output,
    # its input and the centred input's product); with full remat only the carries, one
    # (64, WIDTH) input per layer, stay.
    hidden = [r for r in none.residuals if r.shape == (DEEP, 64, 4 * WIDTH)]
    assert len(hidden) >= 2 and all("scan" in r.source for r in hidden), none.residuals
    assert not any(r.shape[-1] == 4 * WIDTH for r in full.residuals if not r.is_argument)
    assert any(r.shape == (DEEP, 64, WIDTH) for r in full.residuals)
    assert none.residual_bytes > 4 * full.residual_bytes
    assert remat.MemoryStats(**{**none._asdict()}).to_dict()["temp_bytes"] == none.temp_bytes


@pytest.mark.slow  # compiles ~11 gradient programs
def test_choose_policy_respects_budgets_between_footprints(deep_mlp_args, deep_mlp_stats):
    footprint = {p: s.footprint_bytes for p, s in deep_mlp_stats.items()}
    assert footprint["none"] > footprint["full"], footprint
    order = list(remat.DEFAULT_CANDIDATES)  # cheapest recompute first
    # Budgets: roomy, between none and dots, between the dots policies and full.
    below_none = (footprint["none"] + footprint["dots"]) // 2
    above_full = (footprint["dots_no_batch"] + footprint["full"]) // 2
    for budget in [footprint["none"], below_none, above_full]:
        expected = next(p for p in order if footprint[p] <= budget)
        # Candidates given out of order are sorted by recompute cost.
        choice = remat.choose_policy(
            mlp_loss, *deep_mlp_args, budget_bytes=budget, candidates=order[::-1]
        )
        assert choice.policy == expected, (budget, footprint, choice.footprints)
        assert choice.stats.footprint_bytes <= budget
    with pytest.raises(ValueError, match=f"smallest footprint is {footprint['full']} bytes"):
        remat.choose_policy(mlp_loss, *deep_mlp_args, budget_bytes=footprint["full"] - 1)


def test_choose_policy_bad_input(deep_mlp_args):
    with pytest.raises(ValueError, match="budget_bytes must be positive"):
        remat.choose_policy(mlp_loss, *deep_mlp_args, budget_bytes=0)
    with pytest.raises(ValueError, match="valid policies"):
        remat.choose_policy(mlp_loss, *deep_mlp_args, budget_bytes=1, candidates=["max"])


# ----------------------------------------------------------------- sqrt(n) scan


def residual_layer(x, layer_params):
    return mlp_block(layer_params, x)


@pytest.mark.parametrize("depth,segment_length,inner_policy", [(10, 3, "none"), (9, None, "full")])
def test_sqrt_scan_matches_plain_scan(depth, segment_length, inner_policy):
    params = init_mlp(jax.random.key(4), depth, 8)
    x = jax.random.normal(jax.random.key(5), (4, 8))

    def loss(scan_fn, **kw):
        return lambda p, x: jnp.sum(jnp.sin(scan_fn(residual_layer, x, p, **kw)))

    ref = jax.jit(jax.value_and_grad(loss(remat.scan_layers), argnums=(0, 1)))(params, x)
    got = jax.jit(
        jax.value_and_grad(
            loss(remat.sqrt_scan, segment_length=segment_length, inner_policy=inner_policy),
            argnums=(0, 1),
        )
    )(params, x)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), got, ref)


def test_sqrt_scan_memory_grows_sublinearly():
    """Depth x4 -> no-remat temp memory ~x4, sqrt(n) scan memory clearly less."""

    def temp_bytes(scan_fn, depth):
        params = jax.eval_shape(lambda: init_mlp(jax.random.key(0), depth, 8))
        x = jax.ShapeDtypeStruct((128, 8), jnp.float32)
        loss = lambda p, x: jnp.mean(scan_fn(residual_layer, x, p) ** 2)
        return remat.compiled_memory(jax.value_and_grad(loss), params, x).temp_bytes

    plain = [temp_bytes(remat.scan_layers, d) for d in (16, 64)]
    nested = [temp_bytes(remat.sqrt_scan, d) for d in (16, 64)]
    assert plain[1] / plain[0] > 3.5, plain
    assert nested[1] / nested[0] < 2.5, nested
    assert nested[1] < plain[1] / 4, (nested, plain)


def test_sqrt_scan_bad_input():
    params = init_mlp(jax.random.key(0), 4, 8)
    with pytest.raises(ValueError, match="segment_length must be in"):
        remat.sqrt_scan(residual_layer, jnp.ones((2, 8)), params, segment_length=5)
    with pytest.raises(ValueError, match="same leading"):
        remat.sqrt_scan(residual_layer, jnp.ones((2, 8)), (params[0], params[1][:3]))


# ----------------------------------------------------------------- the zoo's Transformer LM

TRANSFORMER_POLICIES = ["none", "dots", "names:attn_qkv,mlp_hidden", "full"]


@pytest.fixture(scope="module")
def zoo_transformer():
    """models.transformer.TransformerLM, every block checkpointed through parallel.remat."""
    transformer = pytest.importorskip("models.transformer")
    from models.nets import Functional

    def net(policy):
        return Functional(
            lambda rngs: transformer.TransformerLM(
                vocab_size=16,
                seq_len=8,
                d_model=16,
                num_heads=2,
                num_layers=2,
                remat=policy != "none",
                remat_policy=policy,
                rngs=rngs,
            )
        )

    def loss_for(policy):
        apply = net(policy).apply

        def loss(params, tokens_BL):
            logits = apply(params, tokens_BL[:, :-1])
            log_probs = jax.nn.log_softmax(logits)
            return -jnp.mean(jnp.take_along_axis(log_probs, tokens_BL[:, 1:, None], axis=-1))

        return loss

    params = net("none").init(jax.random.key(6))
    tokens = jax.random.randint(jax.random.key(7), (4, 9), 0, 16)
    return loss_for, params, tokens


@pytest.mark.slow  # four compiled gradients of an NNX model
def test_zoo_transformer_gradients_and_residuals_under_policies(zoo_transformer):
    loss_for, params, tokens = zoo_transformer
    ref = jax.jit(jax.grad(loss_for("none")))(params, tokens)
    for policy in TRANSFORMER_POLICIES[1:]:
        grads = jax.jit(jax.grad(loss_for(policy)))(params, tokens)
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), grads, ref
        )
    # The LM's blocks are a Python loop, not a scan: XLA:CPU then compiles the same temp bytes
    # with or without remat (its scheduler does not keep the recompute late), so what is checked
    # here is what the backward pass is given to keep: the saved residuals.
    saved = {
        p: sum(
            r.nbytes
            for r in remat.saved_residuals(loss_for(p), params, tokens)
            if not r.is_argument
        )
        for p in ("none", "dots", "full")
    }
    assert saved["none"] > saved["dots"] > saved["full"], saved


def test_default_segment_length_prefers_divisors_near_sqrt():
    assert [remat.default_segment_length(d) for d in (16, 32, 128, 256)] == [4, 8, 16, 16]
    assert remat.default_segment_length(7) == 3  # prime: round(sqrt), with a remainder segment
