"""Pipeline parallelism: schedule tables, GPipe / 1F1B against the sequential reference, errors.

Every pipelined result is compared with `sequential_reference` (the stages one after another on
the whole batch, on one device). Shapes are tiny; each (p, m, schedule) compiles once.
"""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from parallel import pipeline
from parallel import pipeline_schedule as ps
from parallel.mesh import make_mesh, named

WIDTH = 8


def residual_mlp_block(params, x):
    return x + jnp.tanh(x @ params["w_in"] + params["b"]) @ params["w_out"]


def mse(outputs, targets):
    return jnp.mean((outputs - targets) ** 2)


def stacked_params(key, num_stages, width=WIDTH, hidden=16):
    k_in, k_b, k_out = jax.random.split(key, 3)
    return {
        "w_in": jax.random.normal(k_in, (num_stages, width, hidden)) / np.sqrt(width),
        "b": 0.1 * jax.random.normal(k_b, (num_stages, hidden)),
        "w_out": jax.random.normal(k_out, (num_stages, hidden, width)) / np.sqrt(hidden),
    }


def batch(key, size, width=WIDTH):
    x = jax.random.normal(key, (size, width))
    return x, jnp.sin(2.0 * x)


# Jitted once per shape, on one device (the arguments are fetched to the host first).
sequential_reference = jax.jit(
    functools.partial(pipeline.sequential_reference, residual_mlp_block, mse)
)


def assert_trees_close(actual, expected, rtol=1e-5, atol=1e-6):
    jax.tree.map(
        lambda a, e: np.testing.assert_allclose(np.asarray(a), np.asarray(e), rtol, atol),
        actual,
        expected,
    )


# ----------------------------------------------------------------------------- schedule tables

PM_PAIRS = [(1, 3), (2, 1), (2, 5), (4, 2), (4, 4), (4, 8), (4, 32), (8, 4), (8, 64)]


@pytest.mark.parametrize("num_stages,num_microbatches", PM_PAIRS)
def test_gpipe_bubble_is_the_formula(num_stages, num_microbatches):
    table = ps.schedule_table("gpipe", num_stages, num_microbatches)
    assert ps.bubble_fraction(table) == pytest.approx(
        ps.gpipe_bubble_formula(num_stages, num_microbatches)
    )
    # GPipe keeps every micro-batch's activations until the backward starts.
    np.testing.assert_array_equal(ps.max_live_microbatches(table), num_microbatches)


@pytest.mark.parametrize("num_stages,num_microbatches", PM_PAIRS)
def test_1f1b_bubble_and_live_microbatches(num_stages, num_microbatches):
    """1F1B idles as much as GPipe, (p-1)/(m+p-1), but stage s holds min(p-s, m) <= p
    micro-batches, whatever m is; its one-slot inbox and unbuffered cotangents suffice."""
    table = ps.schedule_table("1f1b", num_stages, num_microbatches)
    assert ps.bubble_fraction(table) == pytest.approx(
        ps.gpipe_bubble_formula(num_stages, num_microbatches)
    )
    assert table.num_ticks == 2 * (num_microbatches + num_stages - 1)
    live = ps.max_live_microbatches(table)
    np.testing.assert_array_equal(
        live, np.minimum(num_stages - np.arange(num_stages), num_microbatches)
    )
    assert live.max() <= ps.stash_size_1f1b(num_stages) == num_stages
    assert ps.max_waiting_activations(table).max() <= 1
    np.testing.assert_array_equal(ps.cotangent_delays(table), 1)


def test_1f1b_alternates_forward_and_backward_in_steady_state():
    """Stage 1 of 4 with m=8: 2 warm-up forwards, then F B F B ..., then the last backwards."""
    table = ps.schedule_table("1f1b", 4, 8)
    ops = [f"F{f}" if f != ps.IDLE else f"B{b}" for f, b in
           zip(table.forward[:, 1], table.backward[:, 1], strict=True) if max(f, b) != ps.IDLE]
    assert ops == ["F0", "F1", "F2", "B0", "F3", "B1", "F4", "B2", "F5", "B3", "F6", "B4",
                   "F7", "B5", "B6", "B7"]


@pytest.mark.parametrize("schedule", ps.SCHEDULES)
@pytest.mark.parametrize("num_stages,num_microbatches", [(3, 2), (4, 7)])
def test_tables_respect_dependencies(schedule, num_stages, num_microbatches):
    """Each stage runs each micro-batch forward and backward once, F after the previous stage's
    F, B after the next stage's B (same tick allowed on the last stage: F then B), B after F."""
    table = ps.schedule_table(schedule, num_stages, num_microbatches)

    def tick_of(ops, stage, microbatch):
        ticks = np.flatnonzero(ops[:, stage] == microbatch)
        assert len(ticks) == 1, (stage, microbatch, ticks)
        return ticks[0]

    for i in range(num_microbatches):
        for s in range(num_stages):
            fwd, bwd = tick_of(table.forward, s, i), tick_of(table.backward, s, i)
            assert bwd >= fwd
            if s > 0:
                assert fwd > tick_of(table.forward, s - 1, i)
            if s < num_stages - 1:
                assert bwd > tick_of(table.backward, s + 1, i)


def test_unknown_schedule_names_the_choices():
    with pytest.raises(ValueError, match="gpipe.*1f1b"):
        ps.schedule_table("interleaved", 2, 2)


# ----------------------------------------------------------------------------- numerics

CASES = [  # (num_stages, num_microbatches, mesh axes): m < p, m = p, m >> p
    (4, 2, {"data": 2, "stage": 4}),
    (4, 4, {"data": 2, "stage": 4}),
    (2, 12, {"data": 4, "stage": 2}),
    (8, 4, {"stage": 8}),
]


# Every case under GPipe and 1F1B with stage_ops="switch"; "masked" on m < p and m >> p.
VARIANT_CASES = [
    (schedule, stage_ops, *case) for case in CASES
    for schedule, stage_ops in [("gpipe", "auto"), ("1f1b", "switch")]
] + [("1f1b", "masked", *CASES[0]), ("1f1b", "masked", *CASES[2])]


@pytest.mark.parametrize("schedule,stage_ops,num_stages,num_microbatches,axes", VARIANT_CASES)
def test_value_and_grad_matches_sequential(schedule, stage_ops, num_stages, num_microbatches,
                                           axes):
    mesh = make_mesh(axes)
    key_params, key_batch = jax.random.split(jax.random.key(num_stages * 100 + num_microbatches))
    params = jax.device_put(stacked_params(key_params, num_stages), named(mesh, "stage"))
    inputs, targets = batch(key_batch, 4 * num_microbatches)
    batch_axis = "data" if "data" in axes else None
    inputs, targets = jax.device_put((inputs, targets), named(mesh, batch_axis))
    step = jax.jit(
        functools.partial(
            pipeline.value_and_grad, residual_mlp_block, mse, mesh=mesh,
            num_microbatches=num_microbatches, schedule=schedule, stage_ops=stage_ops,
        )
    )
    loss, grads = step(params, inputs, targets)
    ref_loss, ref_grads = sequential_reference(*jax.device_get((params, inputs, targets)))
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
    assert_trees_close(grads, ref_grads)
    assert jax.tree.structure(grads) == jax.tree.structure(params)
    for g, p in zip(jax.tree.leaves(grads), jax.tree.leaves(params), strict=True):
        assert g.sharding.is_equivalent_to(p.sharding, g.ndim), (g.sharding, p.sharding)


@pytest.fixture(scope="module")
def stage4_setup():
    mesh = make_mesh({"data": 2, "stage": 4})
    params = jax.device_put(stacked_params(jax.random.key(7), 4), named(mesh, "stage"))
    inputs, targets = batch(jax.random.key(8), 12)
    return mesh, params, inputs, targets


def test_apply_and_its_grads_match_sequential(stage4_setup):
    """The GPipe forward is an ordinary differentiable function: outputs and vjp w.r.t. both
    parameters and inputs equal the sequential stack's."""
    mesh, params, inputs, _ = stage4_setup
    pipelined = functools.partial(
        pipeline.apply, residual_mlp_block, mesh=mesh, num_microbatches=3
    )
    sequential = functools.partial(pipeline.sequential_apply, residual_mlp_block)
    cotangent = jax.random.normal(jax.random.key(9), inputs.shape)
    outputs, pullback = jax.vjp(pipelined, params, inputs)
    ref_outputs, ref_pullback = jax.vjp(sequential, params, inputs)
    np.testing.assert_allclose(outputs, ref_outputs, rtol=1e-6, atol=1e-6)
    assert_trees_close(pullback(cotangent), ref_pullback(cotangent))


@pytest.mark.parametrize("schedule,policy,stage_ops",
                         [("gpipe", "dots", "auto"), ("1f1b", "full", "switch"),
                          ("1f1b", "dots", "masked")])
def test_remat_inside_stages_keeps_gradients(stage4_setup, schedule, policy, stage_ops):
    """`remat_policy` puts a checkpoint around the stage in the traced program of both
    schedules (both 1F1B stage_ops), and the gradients stay the sequential ones."""
    mesh, params, inputs, targets = stage4_setup
    step = functools.partial(
        pipeline.value_and_grad, residual_mlp_block, mse, mesh=mesh, num_microbatches=6,
        schedule=schedule, stage_ops=stage_ops,
    )
    assert not re.search(r"\b(checkpoint|remat2?)\[", str(jax.make_jaxpr(step)(params, inputs,
                                                                               targets)))
    with_remat = functools.partial(step, remat_policy=policy)
    assert re.search(r"\b(checkpoint|remat2?)\[", str(jax.make_jaxpr(with_remat)(
        params, inputs, targets)))
    loss, grads = jax.jit(with_remat)(params, inputs, targets)
    ref_loss, ref_grads = sequential_reference(*jax.device_get((params, inputs, targets)))
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
    assert_trees_close(grads, ref_grads)


# ----------------------------------------------------------------------------- bad input


@pytest.fixture(scope="module")
def stage2_mesh():
    return make_mesh({"data": 4, "stage": 2})


def numpy_params(num_stages):
    """Parameters as host numpy arrays: the checks run before any tracing or compiling."""
    return {"w_in": np.zeros((num_stages, WIDTH, 16), np.float32),
            "b": np.zeros((num_stages, 16), np.float32),
            "w_out": np.zeros((num_stages, 16, WIDTH), np.float32)}


def call(mesh, params, inputs, **kwargs):
    targets = np.zeros_like(inputs)
    kwargs = {"num_microbatches": 2, **kwargs}
    return pipeline.value_and_grad(
        residual_mlp_block, mse, params, inputs, targets, mesh=mesh, **kwargs
    )


def test_batch_not_divisible_by_microbatches(stage2_mesh):
    with pytest.raises(ValueError, match="batch size 10 .* num_microbatches=4"):
        call(stage2_mesh, numpy_params(2), np.zeros((10, WIDTH), np.float32),
             num_microbatches=4)


def test_targets_must_split_like_inputs(stage2_mesh):
    params, inputs = numpy_params(2), np.zeros((8, WIDTH), np.float32)
    with pytest.raises(ValueError, match="batch size 6 of targets is not divisible by "
                                         "num_microbatches=4"):
        pipeline.value_and_grad(residual_mlp_block, mse, params, inputs, np.zeros((6, WIDTH)),
                                mesh=stage2_mesh, num_microbatches=4)
    with pytest.raises(ValueError, match=r"disagree on the batch size: \[4, 8\]"):
        pipeline.value_and_grad(residual_mlp_block, mse, params, inputs, np.zeros((4, WIDTH)),
                                mesh=stage2_mesh, num_microbatches=2, schedule="1f1b")


def test_stage_count_must_match_mesh_axis(stage2_mesh):
    with pytest.raises(ValueError, match="3 stages .* 'stage' has size 2"):
        call(stage2_mesh, numpy_params(3), np.zeros((8, WIDTH), np.float32))


def test_leaves_without_leading_stage_axis(stage2_mesh):
    params = numpy_params(2)
    params["b"] = params["b"][0]  # shape (16,): a per-stage leaf that was never stacked
    with pytest.raises(ValueError, match=r"disagree.*\['b'\]\": 16"):
        call(stage2_mesh, params, np.zeros((8, WIDTH), np.float32))
    params["b"] = np.float32(0.0)
    with pytest.raises(ValueError, match=r"\['b'\] is a scalar"):
        call(stage2_mesh, params, np.zeros((8, WIDTH), np.float32))


def test_stage_ops_auto_switches_only_on_pure_pipeline_meshes(stage2_mesh):
    from parallel import pipeline_stages

    pure = make_mesh({"data": 1, "stage": 8})
    assert pipeline_stages.resolve_stage_ops("auto", pure, "stage") == "switch"
    assert pipeline_stages.resolve_stage_ops("auto", stage2_mesh, "stage") == "masked"
    assert pipeline_stages.resolve_stage_ops("switch", stage2_mesh, "stage") == "switch"
    with pytest.raises(ValueError, match="unknown stage_ops 'cond'.*'switch', 'masked'"):
        call(stage2_mesh, numpy_params(2), np.zeros((8, WIDTH), np.float32), stage_ops="cond")


def test_bad_schedule_axis_and_microbatches(stage2_mesh):
    params = numpy_params(2)
    with pytest.raises(ValueError, match="valid schedules"):
        call(stage2_mesh, params, np.zeros((8, WIDTH), np.float32), schedule="zero_bubble")
    with pytest.raises(ValueError, match="no axis 'pipe'"):
        call(stage2_mesh, params, np.zeros((8, WIDTH), np.float32), stage_axis="pipe")
    with pytest.raises(ValueError, match="positive int"):
        call(stage2_mesh, params, np.zeros((8, WIDTH), np.float32), num_microbatches=0)


# ----------------------------------------------------------------------------- vocab-sharded head
# The 3-D (data x model x stage) training of the task zoo's Transformer: test_pipeline_zoo.py.

HEADS, HEAD_DIM, SEQ, VOCAB = 2, 4, 6, 16
MODEL_WIDTH = HEADS * HEAD_DIM


def layer_norm(x):
    mean = jnp.mean(x, -1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(jnp.var(x, -1, keepdims=True) + 1e-5)


def transformer_block(params, x_BLD):
    """Pre-LN causal self-attention + MLP block (Megatron layout: heads / hidden on `model`)."""
    h = layer_norm(x_BLD)
    q, k, v = (jnp.einsum("bld,dhk->blhk", h, params[name]) for name in ("wq", "wk", "wv"))
    scores = jnp.einsum("blhk,bmhk->bhlm", q, k) / np.sqrt(HEAD_DIM)
    causal = jnp.tril(jnp.ones((x_BLD.shape[1],) * 2, bool))
    weights = jax.nn.softmax(jnp.where(causal, scores, -1e9), axis=-1)
    attended = jnp.einsum("bhlm,bmhk->blhk", weights, v)
    x_BLD = x_BLD + jnp.einsum("blhk,hkd->bld", attended, params["wo"])
    return x_BLD + jax.nn.gelu(layer_norm(x_BLD) @ params["w1"]) @ params["w2"]


TRANSFORMER_SPECS = {  # leading axis: stage; heads and MLP hidden units: model
    "wq": ("stage", None, "model"), "wk": ("stage", None, "model"),
    "wv": ("stage", None, "model"), "wo": ("stage", "model"),
    "w1": ("stage", None, "model"), "w2": ("stage", "model"),
}


def tiny_lm(key, num_stages, hidden=16):
    """Embedding -> `num_stages` transformer blocks -> norm + unembedding [D, V]."""
    k_embed, k_head, *keys = jax.random.split(key, 8)
    shapes = {
        "wq": (MODEL_WIDTH, HEADS, HEAD_DIM), "wk": (MODEL_WIDTH, HEADS, HEAD_DIM),
        "wv": (MODEL_WIDTH, HEADS, HEAD_DIM), "wo": (HEADS, HEAD_DIM, MODEL_WIDTH),
        "w1": (MODEL_WIDTH, hidden), "w2": (hidden, MODEL_WIDTH),
    }
    blocks = {
        name: jax.random.normal(k, (num_stages, *shape)) / np.sqrt(np.prod(shape[:-1]))
        for k, (name, shape) in zip(keys, sorted(shapes.items()), strict=True)
    }
    return {
        "embed": jax.random.normal(k_embed, (VOCAB, MODEL_WIDTH)),
        "blocks": blocks,
        "head": jax.random.normal(k_head, (MODEL_WIDTH, VOCAB)) / np.sqrt(MODEL_WIDTH),
    }


def lm_head_loss(head, outputs_BLD, labels_BL):
    logits_BLV = layer_norm(outputs_BLD) @ head
    return pipeline.softmax_cross_entropy_with_integer_labels(logits_BLV, labels_BL).mean()


@jax.jit
def lm_reference(params, tokens, labels):
    """The whole LM on one device, with optax's (gather-based) cross-entropy."""

    def loss(params):
        x = params["embed"][tokens]
        logits = layer_norm(pipeline.sequential_apply(transformer_block, params["blocks"], x))
        return optax.softmax_cross_entropy_with_integer_labels(
            logits @ params["head"], labels).mean()

    return jax.value_and_grad(loss)(params)


def test_gather_free_cross_entropy_equals_optax():
    logits = jax.random.normal(jax.random.key(0), (3, 5, 11))
    labels = jax.random.randint(jax.random.key(1), (3, 5), 0, 11)
    ours = jax.jit(jax.value_and_grad(
        lambda z: pipeline.softmax_cross_entropy_with_integer_labels(z, labels).mean()))(logits)
    theirs = jax.jit(jax.value_and_grad(
        lambda z: optax.softmax_cross_entropy_with_integer_labels(z, labels).mean()))(logits)
    assert_trees_close(ours, theirs)
    with pytest.raises(ValueError, match=r"labels shape \(3,\) must equal logits shape"):
        pipeline.softmax_cross_entropy_with_integer_labels(logits, labels[:, 0])


@pytest.mark.slow
def test_1f1b_vocab_sharded_lm_head_matches_single_device():
    """data=2 x model=2 x stage=2: embedding outside the pipeline (its gradient pulled back from
    the input cotangents), transformer blocks as stages (heads / MLP hidden on `model`), norm +
    unembedding sharded over the vocabulary as the head inside the 1F1B scan, with
    stage_ops="switch": the all-reduces over `model` run inside the branches of the stages that
    take them. Loss and every gradient equal the whole model's on one device."""
    mesh = make_mesh({"data": 2, "model": 2, "stage": 2})
    params = tiny_lm(jax.random.key(0), 2)
    tokens = jax.random.randint(jax.random.key(1), (8, SEQ + 1), 0, VOCAB)
    inputs, labels = tokens[:, :-1], tokens[:, 1:]
    shardings = {
        "embed": named(mesh),
        "blocks": {k: named(mesh, *spec) for k, spec in TRANSFORMER_SPECS.items()},
        "head": named(mesh, None, "model"),
    }

    @jax.jit
    def pipelined(params, tokens, labels):
        x, embed_pullback = jax.vjp(lambda embed: embed[tokens], params["embed"])
        loss, (g_blocks, g_head, g_x) = pipeline.value_and_grad_with_head(
            transformer_block, lm_head_loss, params["blocks"], params["head"], x, labels,
            mesh=mesh, num_microbatches=4, schedule="1f1b", stage_ops="switch",
        )
        return loss, {"embed": embed_pullback(g_x)[0], "blocks": g_blocks, "head": g_head}

    loss, grads = pipelined(jax.device_put(params, shardings),
                            *jax.device_put((inputs, labels), named(mesh, "data")))
    ref_loss, ref_grads = lm_reference(params, inputs, labels)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
    assert_trees_close(grads, ref_grads, rtol=1e-5, atol=1e-6)
    assert grads["head"].sharding.is_equivalent_to(shardings["head"], 2)
