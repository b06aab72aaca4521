"""Tensor parallelism on a data=2 x model=4 mesh equals the unsharded reference.

Both forms (shard_map with explicit psum, sharding annotations left to XLA) are checked for the
loss, every gradient, and several train steps with Adam and a learned optimizer.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

import learned_opt as lo
from models import functional_lm as lm
from parallel import communication
from parallel import data_parallel as dp
from parallel import mesh as mesh_lib
from parallel import tensor_parallel as tp

CONFIG = lm.LMConfig(vocab=32, dim=16, num_heads=4, head_dim=4, hidden=32, num_layers=1,
                     max_len=8)
RTOL, ATOL = 1e-5, 2e-6


@pytest.fixture(scope="module")
def mesh():
    return mesh_lib.make_mesh({"data": 2, "model": 4})


@pytest.fixture(scope="module")
def params():
    return lm.init_lm(jax.random.key(0), CONFIG)


@pytest.fixture(scope="module")
def batch():
    return {"tokens": jax.random.randint(jax.random.key(1), (4, CONFIG.max_len + 1), 0,
                                         CONFIG.vocab)}


@pytest.fixture(scope="module")
def reference(params, batch):
    return jax.jit(jax.value_and_grad(lm.lm_loss))(params, batch)


def assert_trees_close(actual, expected):
    jax.tree.map(lambda a, e: np.testing.assert_allclose(np.asarray(a), np.asarray(e), RTOL, ATOL),
                 actual, expected)


def loss_of(form, mesh):
    wrap = tp.shard_map_lm_loss if form == "shard_map" else tp.annotated_lm_loss
    return wrap(lm.lm_loss, mesh)


@pytest.mark.parametrize("form", ["shard_map", "annotations"])
def test_loss_and_gradients_equal_unsharded(form, mesh, params, batch, reference):
    ref_loss, ref_grads = reference
    shardings = tp.param_shardings(params, mesh)
    placed = jax.device_put(params, shardings)
    loss, grads = jax.jit(jax.value_and_grad(loss_of(form, mesh)))(placed, batch)
    np.testing.assert_allclose(loss, ref_loss, RTOL)
    assert_trees_close(grads, ref_grads)
    # Gradients come back laid out like the params: column slices of w_in, head slices of w_q.
    for layer, name in (("mlp", "w_in"), ("attn", "w_q"), ("attn", "w_o")):
        grad = grads["blocks"][0][layer][name]
        assert grad.sharding.is_equivalent_to(shardings["blocks"][0][layer][name], grad.ndim)
    assert grads["blocks"][0]["mlp"]["w_in"].addressable_shards[0].data.shape == (16, 8)


def test_megatron_mlp_and_attention_need_one_all_reduce_each(mesh, params):
    # Forward pass of one MLP and one attention layer, per shard: exactly one psum of the
    # [B_local, L, D] output each; nothing else moves between devices.
    block = params["blocks"][0]
    x = jax.random.normal(jax.random.key(2), (4, CONFIG.max_len, CONFIG.dim))
    reduce = lambda y: jax.lax.psum(y, "model")
    specs = tp.param_specs(params)["blocks"][0]
    for layer, name in ((lm.mlp, "mlp"), (lm.attention, "attn")):
        fn = jax.jit(jax.shard_map(lambda p, x, layer=layer: layer(p, x, reduce=reduce),
                                   mesh=mesh, in_specs=(specs[name], P("data")),
                                   out_specs=P("data")))
        np.testing.assert_allclose(fn(block[name], x), layer(block[name], x), RTOL, ATOL)
        stats = communication.communication_of(fn, block[name], x)
        activation_bytes = 2 * CONFIG.max_len * CONFIG.dim * 4
        assert stats.by_op["all-reduce"] == communication.OpStats(1, activation_bytes,
                                                                  activation_bytes), name
        assert stats.total_count == 1, stats.as_dict()


def _learned(lopt):
    return lambda: lopt.optimizer(lopt.init(jax.random.key(3)))


@pytest.fixture(scope="module")
def reference_runs(params, batch):
    """Unsharded 3-step trajectories, computed once per optimizer and shared by both forms."""
    cache = {}

    def run(name, tx):
        if name not in cache:
            step, p, state, losses = dp.make_train_step(lm.lm_loss, tx), params, tx.init(params), []
            for _ in range(3):
                p, state, loss = step(p, state, batch)
                losses.append(float(loss))
            cache[name] = (losses, p)
        return cache[name]

    return run


@pytest.mark.slow
@pytest.mark.parametrize("name", ["adam", "learned_adam"])
@pytest.mark.parametrize("form", ["shard_map", "annotations"])
def test_training_on_data_x_model_mesh_equals_unsharded(form, name, mesh, params, batch,
                                                        reference_runs):
    tx = optax.adam(1e-2) if name == "adam" else _learned(lo.LearnedAdam())()
    ref_losses, ref_params = reference_runs(name, tx)
    placed, opt_state, step = tp.make_tp_train_step(loss_of(form, mesh), tx, mesh, params)
    first = jax.tree.map(lambda x: x.sharding, (placed, opt_state))
    losses = []
    for _ in range(3):
        placed, opt_state, loss = step(placed, opt_state, batch)
        losses.append(float(loss))
    np.testing.assert_allclose(losses, ref_losses, RTOL)
    assert_trees_close(placed, ref_params)
    jax.tree.map(lambda a, b: a.is_equivalent_to(b, 3) or pytest.fail(f"{a} != {b}"), first,
                 jax.tree.map(lambda x: x.sharding, (placed, opt_state)))


@pytest.mark.parametrize("make_tx", [_learned(lo.MLPLOpt()), lambda: optax.lamb(1e-2)],
                         ids=["mlp_lopt", "lamb"])
def test_optimizer_update_under_tp_is_exact_and_local(make_tx, mesh, params, reference):
    # Per-parameter work stays on the shard; per-tensor statistics (LAMB's trust ratio, the
    # learned optimizer's normalizers) are reduced exactly: the update equals the unsharded one,
    # comes out sharded like the params, and no parameter-sized tensor is gathered.
    tx = make_tx()
    _, grads = reference
    shardings = tp.param_shardings(params, mesh)
    placed, placed_grads = jax.device_put(params, shardings), jax.device_put(grads, shardings)
    state = dp.init_opt_state(tx, placed, mesh)
    updates_of = lambda g, s, p: tx.update(g, s, p, value=jnp.float32(1.0))[0]
    update = jax.jit(updates_of, out_shardings=shardings)
    assert_trees_close(update(placed_grads, state, placed),
                       jax.jit(updates_of)(grads, tx.init(params), params))
    stats = communication.communication_of(update, placed_grads, state, placed)
    param_bytes = sum(x.size * 4 for x in jax.tree.leaves(params))
    # Gathers of per-device partial statistics (a variadic reduction partitioned by XLA) are
    # fine; a gather the size of any model-sharded parameter is not.
    smallest_sharded = min(x.size * 4 for x in jax.tree.leaves(placed)
                           if not x.sharding.is_fully_replicated)
    assert stats.by_op["all-gather"].largest < smallest_sharded, stats.as_dict()
    assert stats.total_bytes < 0.02 * param_bytes, stats.as_dict()


def test_bad_sizes_are_named(params, batch):
    heads_message = r"num_heads=4 is not divisible by the 'model' axis size 8"
    with pytest.raises(ValueError, match=heads_message):
        tp.param_shardings(params, mesh_lib.make_mesh({"data": 1, "model": 8}))
    odd_hidden = lm.init_lm(jax.random.key(0), CONFIG._replace(hidden=30))
    with pytest.raises(ValueError, match="MLP hidden size 30 is not divisible by the 'model'"):
        tp.param_shardings(odd_hidden, mesh_lib.make_mesh({"data": 2, "model": 4}))
    with pytest.raises(ValueError, match="batch size 3 is not divisible by the 'data' axis size 2"):
        tp.shard_map_lm_loss(lm.lm_loss, mesh_lib.make_mesh({"data": 2, "model": 4}))(
            params, {"tokens": batch["tokens"][:3]})
    with pytest.raises(TypeError, match=r"takes the model's loss first.*functional_lm\.lm_loss"):
        tp.shard_map_lm_loss(mesh_lib.make_mesh({"data": 2, "model": 4}))


@pytest.mark.slow
def test_zoo_transformer_trains_on_data_x_model_mesh_by_annotations(mesh):
    # The task zoo's flax Transformer LM, unchanged: Megatron shardings chosen by param path,
    # the batch split over `data`; XLA partitions the program. Equal to one device.
    import models

    task = models.get_task("text_transformer", seq_len=8, d_model=16, num_heads=4,
                           num_layers=1, batch_size=4)
    params = task.init(jax.random.key(0))
    batches = [task.sample_batch(jax.random.key(i), "train") for i in (1, 2)]
    # SGD, not Adam: the key bias of attention has a mathematically zero gradient (softmax is
    # shift-invariant), and Adam divides that rounding noise by its own size, so any change of
    # summation order (sharded or not) flips those entries by ~lr.
    tx = optax.sgd(0.5)
    shardings = tp.shardings_from_rules(params, mesh)
    assert shardings["blocks"][0]["mlp"]["up"]["kernel"].spec == P(None, "model")
    assert shardings["token_embed"]["embedding"].is_fully_replicated
    placed = jax.device_put(params, shardings)
    state = dp.init_opt_state(tx, placed, mesh)
    step = dp.make_jit_train_step(task.loss, tx, mesh, param_shardings=shardings)
    ref_step, ref_params, ref_state = dp.make_train_step(task.loss, tx), params, tx.init(params)
    for batch in batches:
        placed, state, loss = step(placed, state, batch)
        ref_params, ref_state, ref_loss = ref_step(ref_params, ref_state, batch)
        np.testing.assert_allclose(loss, ref_loss, RTOL)
    assert_trees_close(placed, ref_params)
    out_kernel = placed["blocks"][0]["attn"]["out"]["kernel"]
    assert out_kernel.sharding.is_equivalent_to(shardings["blocks"][0]["attn"]["out"]["kernel"], 2)
    assert out_kernel.addressable_shards[0].data.shape == (4, 16)  # rows split over model=4
    odd = {**params, "blocks": [{**params["blocks"][0], "mlp": {
        **params["blocks"][0]["mlp"], "up": {"kernel": jnp.ones((16, 63)), "bias": jnp.ones(63)}}}]}
    message = r"blocks/0/mlp/up/\w+: dimension \d of shape .*63.* by the 'model' axis size 4"
    with pytest.raises(ValueError, match=message):
        tp.shardings_from_rules(odd, mesh)
