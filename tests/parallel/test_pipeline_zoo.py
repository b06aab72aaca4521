"""3-D (data x model x stage) training of the task zoo's Transformer through `parallel.pipeline`.

`parallel` may not import `models`, so the adapter that cuts `models.transformer.TransformerLM`
into embedding | stages of blocks | head lives here: it runs the zoo's own flax modules
(`nnx.merge` of each sub-module with its slice of the parameters) and stacks the blocks into
`[num_stages, layers_per_stage, ...]` stage parameters. Training keeps that stacked tree (as
scanned layers are usually stored); the single-device reference runs the task's own loss
(`task.loss`, optax cross-entropy, the whole flax module) on the unstacked tree, with the same
optimizer on the same stacked tree. Fewer, stacked leaves also keep the learned optimizer's
compile time (which grows with the number of leaves) within the test budget.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import learned_opt as lo
import models
from parallel import pipeline
from parallel import tensor_parallel as tp
from parallel.mesh import make_mesh, named

NUM_STAGES, NUM_LAYERS, NUM_MICROBATCHES, NUM_STEPS = 2, 2, 4, 3
TASK = {"seq_len": 8, "d_model": 8, "num_heads": 2, "num_layers": NUM_LAYERS, "batch_size": 8}
# Megatron rules of the zoo's blocks, plus the readout split over d_model (the vocabulary of the
# character corpus, 97, does not split over 2 devices).
RULES = (*tp.MEGATRON_RULES, (r"readout/kernel$", jax.sharding.PartitionSpec("model", None)))


def pure_apply(module):
    """`(params, *args) -> module(*args)` with `module`'s parameters replaced by `params`."""
    graphdef, state = nnx.split(module)

    def apply(params, *args):
        fresh = jax.tree.map(lambda leaf: leaf, state)
        nnx.replace_by_pure_dict(fresh, params)
        return nnx.merge(graphdef, fresh)(*args)

    return apply


class ZooTransformerPipeline:
    """`models.transformer.TransformerLM` as embedding | `num_stages` stages | head.

    Args:
      task: a `text_transformer` task of the zoo.
      num_stages: stages; the model's blocks are split evenly, in order, between them.
    """

    def __init__(self, task, num_stages: int):
        params = task.init(jax.random.key(0))
        module = task.net.module(params)
        self.num_layers = len(params["blocks"])
        if self.num_layers % num_stages:
            raise ValueError(f"{self.num_layers} blocks do not split into {num_stages} stages")
        self.num_stages = num_stages
        self.block = pure_apply(module.blocks[0])
        self.token_embed = pure_apply(module.token_embed)
        self.position_embed = pure_apply(module.position_embed)
        self.final_norm = pure_apply(module.final_norm)
        self.readout = pure_apply(module.readout)

    def to_stages(self, blocks):
        """{i: block i} -> leaves [num_stages, layers_per_stage, ...]."""
        stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves),
                               *(blocks[i] for i in range(self.num_layers)))
        return jax.tree.map(lambda a: a.reshape(self.num_stages, -1, *a.shape[1:]), stacked)

    def from_stages(self, stage_tree):
        flat = jax.tree.map(lambda a: a.reshape(self.num_layers, *a.shape[2:]), stage_tree)
        return {i: jax.tree.map(lambda a, i=i: a[i], flat) for i in range(self.num_layers)}

    def to_pipeline(self, params):
        """The zoo's tree with its blocks stacked into "stages" (the layout trained here, as
        scanned layers are stored stacked: the optimizer sees the same tree in both runs)."""
        return {**{k: v for k, v in params.items() if k != "blocks"},
                "stages": self.to_stages(params["blocks"])}

    def to_zoo(self, pipeline_params):
        return {**{k: v for k, v in pipeline_params.items() if k != "stages"},
                "blocks": self.from_stages(pipeline_params["stages"])}

    def shardings(self, pipeline_params, mesh, rules=RULES):
        """Zoo rules by path; stage leaves get the stage axis first, then their block's rule."""
        rest = tp.shardings_from_rules(
            {k: v for k, v in pipeline_params.items() if k != "stages"}, mesh, rules)
        block = jax.tree.map(lambda a: a[0, 0], pipeline_params["stages"])
        block_shardings = tp.shardings_from_rules({"blocks": {0: block}}, mesh, rules)
        return {**rest, "stages": jax.tree.map(lambda s: named(mesh, "stage", None, *s.spec),
                                               block_shardings["blocks"][0])}

    def stage_fn(self, stage_params, x_BLD):
        def one_block(x, block_params):
            return self.block(block_params, x), None

        return jax.lax.scan(one_block, x_BLD, stage_params)[0]

    def embed(self, embed_params, tokens_BL):
        positions = jnp.arange(tokens_BL.shape[1])
        return (self.token_embed(embed_params["token_embed"], tokens_BL)
                + self.position_embed(embed_params["position_embed"], positions)[None])

    def head_loss(self, head_params, x_BLD, labels_BL):
        logits = self.readout(head_params["readout"],
                              self.final_norm(head_params["final_norm"], x_BLD))
        return pipeline.softmax_cross_entropy_with_integer_labels(logits, labels_BL).mean()

    def value_and_grad(self, pipeline_params, batch, *, mesh, schedule):
        """The zoo task's loss and its gradient (pipeline layout), pipelined over `stage`."""
        tokens, labels = batch["tokens"][:, :-1], batch["tokens"][:, 1:]
        embed_params = {k: pipeline_params[k] for k in ("token_embed", "position_embed")}
        head_params = {k: pipeline_params[k] for k in ("final_norm", "readout")}
        x, embed_pullback = jax.vjp(lambda e: self.embed(e, tokens), embed_params)
        loss, (g_stages, g_head, g_x) = pipeline.value_and_grad_with_head(
            self.stage_fn, self.head_loss, pipeline_params["stages"], head_params, x, labels,
            mesh=mesh, num_microbatches=NUM_MICROBATCHES, schedule=schedule,
        )
        (g_embed,) = embed_pullback(g_x)
        return loss, {**g_embed, **g_head, "stages": g_stages}


def make_optimizer(name):
    if name == "adam":
        return optax.adam(1e-2)
    if name != "adafac_lopt":
        raise ValueError(f"unknown optimizer {name!r}; use 'adam' or 'adafac_lopt'")
    lopt = lo.AdafacMLPLOpt()
    return lopt.optimizer(lopt.init(jax.random.key(3)), num_steps=10)


def train(tx, params, batches, grad_fn, param_shardings=None):
    """`len(batches)` steps of `tx` on `grad_fn`'s gradients; returns (params, losses)."""
    opt_state = jax.jit(tx.init)(params)
    if param_shardings is not None:
        # Param-shaped state follows the params; scalars (step counts) come back on one device:
        # replicate them over the mesh of the params.
        mesh = jax.tree.leaves(param_shardings)[0].mesh
        opt_state = jax.tree.map(
            lambda leaf: leaf if len(leaf.sharding.device_set) > 1
            else jax.device_put(leaf, named(mesh)), opt_state)
    # The step returns params and state laid out as it received them: one compile for all steps.
    state_shardings = jax.tree.map(lambda leaf: leaf.sharding, opt_state)
    out_shardings = (param_shardings, state_shardings, None) if param_shardings else None

    @functools.partial(jax.jit, out_shardings=out_shardings)
    def step(params, opt_state, batch):
        loss, grads = grad_fn(params, batch)
        updates, opt_state = tx.update(grads, opt_state, params, value=loss)
        return optax.apply_updates(params, updates), opt_state, loss

    losses = []
    for batch in batches:
        params, opt_state, loss = step(params, opt_state, batch)
        losses.append(float(loss))
    assert step._cache_size() == 1, "the training step compiled more than once"
    return params, losses


def key_bias_mask(params, d_model):
    """False on the key part of each fused QKV bias: a constant added to every key shifts all
    scores of a query equally, so softmax removes it and its gradient is zero in exact
    arithmetic; in float it is rounding noise (~1e-9), which Adam-like normalisation turns into
    steps of size ~lr with arbitrary signs. Every other parameter must match."""

    def one(path, leaf):
        mask = np.ones(leaf.shape, bool)
        if tp.path_name(path).endswith("attn/qkv/bias"):
            mask[..., d_model:2 * d_model] = False
        return mask

    return jax.tree_util.tree_map_with_path(one, params)


@pytest.fixture(scope="module")
def zoo():
    task = models.get_task("text_transformer", **TASK)
    adapter = ZooTransformerPipeline(task, NUM_STAGES)
    mesh = make_mesh({"data": 2, "model": 2, "stage": 2})
    params = adapter.to_pipeline(task.init(jax.random.key(0)))
    return task, adapter, mesh, params


def reference_loss(task, adapter):
    """The task's own loss (optax cross-entropy, the zoo module run whole) of the stacked tree."""
    return lambda params, batch: task.loss(adapter.to_zoo(params), batch)


@pytest.mark.slow
def test_zoo_transformer_3d_training_matches_single_device(zoo):
    """data=2 x model=2 x stage=2 trains models' text_transformer (2 blocks, 1 per stage) with
    1F1B and a learned optimizer (AdafacMLPLOpt) for 3 steps, with the same losses and
    parameters as the task's own loss and the same optimizer on one device. stage_ops "auto" =
    "masked" here: splitting the fused QKV projection sharded over `model` lowers to
    collective-permutes, which cannot sit in per-stage branches."""
    task, adapter, mesh, params = zoo
    batches = [task.sample_batch(jax.random.key(1), "train")] * NUM_STEPS  # one batch: fits it
    tx = make_optimizer("adafac_lopt")

    ref_params, ref_losses = train(tx, params, batches,
                                   jax.value_and_grad(reference_loss(task, adapter)))
    shardings = adapter.shardings(params, mesh)
    grad_fn = functools.partial(adapter.value_and_grad, mesh=mesh, schedule="1f1b")
    pipe_params, pipe_losses = train(
        tx, jax.device_put(params, shardings), jax.device_put(batches, named(mesh, "data")),
        grad_fn, shardings,
    )
    np.testing.assert_allclose(pipe_losses, ref_losses, rtol=1e-5)
    assert pipe_losses[-1] < pipe_losses[0], pipe_losses
    assert max(float(jnp.max(jnp.abs(a - b))) for a, b in
               zip(jax.tree.leaves(ref_params), jax.tree.leaves(params), strict=True)) > 1e-3
    mask = key_bias_mask(params, TASK["d_model"])
    jax.tree.map(
        lambda a, e, keep: np.testing.assert_allclose(np.asarray(a)[keep], np.asarray(e)[keep],
                                                      rtol=1e-4, atol=1e-5),
        pipe_params, ref_params, mask,
    )
    for leaf, sharding in zip(jax.tree.leaves(pipe_params), jax.tree.leaves(shardings),
                              strict=True):
        assert leaf.sharding.is_equivalent_to(sharding, leaf.ndim), (leaf.sharding, sharding)


@pytest.mark.slow
def test_zoo_transformer_3d_gpipe_gradients_match_single_device(zoo):
    """The same 2x2x2 layout under GPipe: loss and the gradient of every parameter equal
    `jax.value_and_grad` of the task's loss on one device (then any optax transform takes the
    same step; the training loop itself is exercised by the 1F1B test). The loss equality also
    checks the adapter: embedding | stages | head is the zoo's forward pass."""
    task, adapter, mesh, params = zoo
    assert params["stages"]["attn"]["qkv"]["kernel"].shape == (NUM_STAGES, 1, 8, 24)
    zoo_params = adapter.to_zoo(params)
    assert sorted(zoo_params["blocks"]) == list(range(NUM_LAYERS))
    jax.tree.map(np.testing.assert_array_equal, adapter.to_pipeline(zoo_params), params)
    batch = task.sample_batch(jax.random.key(1), "train")
    loss, grads = jax.jit(functools.partial(adapter.value_and_grad, mesh=mesh, schedule="gpipe"))(
        jax.device_put(params, adapter.shardings(params, mesh)),
        jax.device_put(batch, named(mesh, "data")))
    ref_loss, ref_grads = jax.jit(jax.value_and_grad(reference_loss(task, adapter)))(params, batch)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
    jax.tree.map(lambda a, e: np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-6),
                 grads, ref_grads)
