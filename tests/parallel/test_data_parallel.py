"""Every data-parallel form equals the single-device full-batch step, on 8 CPU devices.

The SGD(lr=1) gradient check matters: Adam is invariant to a constant gradient scale, so a step
that sums instead of averages shard gradients would still pass an Adam-only check.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import learned_opt as lo
from parallel import communication
from parallel import data_parallel as dp
from parallel import mesh as mesh_lib

NUM_STEPS = 3
RTOL, ATOL = 1e-5, 1e-6


def init_params(key):
    k1, k2 = jax.random.split(key)
    return {
        "w1": jax.random.normal(k1, (4, 16)) * 0.5,
        "b1": jnp.zeros(16),
        "w2": jax.random.normal(k2, (16, 2)) * 0.5,
    }


def loss_fn(params, batch):
    hidden = jnp.tanh(batch["x"] @ params["w1"] + params["b1"])
    return jnp.mean((hidden @ params["w2"] - batch["y"]) ** 2)


def make_batch(key, size=32):
    x = jax.random.normal(key, (size, 4))
    return {"x": x, "y": jnp.concatenate([jnp.sin(x[:, :1]), x[:, 1:2] * x[:, 2:3]], axis=1)}


def _mlp_lopt():
    lopt = lo.MLPLOpt()
    return lopt.optimizer(lopt.init(jax.random.key(7)))


OPTIMIZERS = {
    "adam": lambda: optax.adam(1e-2),
    "mlp_lopt": _mlp_lopt,
}


@pytest.fixture(scope="module")
def mesh():
    return mesh_lib.make_mesh({"data": 8})


@pytest.fixture(scope="module")
def problem():
    params = init_params(jax.random.key(0))
    batches = [make_batch(jax.random.key(i + 1)) for i in range(NUM_STEPS)]
    return params, batches


@pytest.fixture(scope="module", params=list(OPTIMIZERS))
def reference(request, problem):
    """Single-device trajectory: (tx, losses, final params)."""
    tx = OPTIMIZERS[request.param]()
    params, batches = problem
    step = dp.make_train_step(loss_fn, tx)
    opt_state = tx.init(params)
    losses = []
    for batch in batches:
        params, opt_state, loss = step(params, opt_state, batch)
        losses.append(float(loss))
    return tx, losses, params


def assert_trees_close(actual, expected):
    jax.tree.map(
        lambda a, e: np.testing.assert_allclose(np.asarray(a), np.asarray(e), RTOL, ATOL),
        actual,
        expected,
    )


def shardings(tree):
    return jax.tree.map(lambda x: x.sharding, tree)


def run_form(form, tx, mesh, params, batches):
    """Run NUM_STEPS of one data-parallel form; returns (losses, final params, sharding log)."""
    if form == "pmap":
        step = dp.make_pmap_train_step(loss_fn, tx)
        params, opt_state = dp.replicate(params), dp.replicate(tx.init(params))
        prepare = dp.shard_for_pmap
    else:
        make = dp.make_jit_train_step if form == "jit" else dp.make_shard_map_train_step
        step = make(loss_fn, tx, mesh)
        params = jax.device_put(params, mesh_lib.replicated(mesh))
        opt_state = dp.init_opt_state(tx, params, mesh)
        prepare = lambda b: dp.shard_batch(b, mesh)
    losses, seen_shardings = [], []
    for batch in batches:
        seen_shardings.append(shardings((params, opt_state)))
        params, opt_state, loss = step(params, opt_state, prepare(batch))
        losses.append(np.asarray(loss))
    seen_shardings.append(shardings((params, opt_state)))
    if form == "pmap":
        # Every replica holds the same loss and params; compare all of them, then take one.
        for loss in losses:
            np.testing.assert_array_equal(loss, np.full_like(loss, loss[0]))
        jax.tree.map(lambda x: np.testing.assert_array_equal(x, np.broadcast_to(x[0], x.shape)),
                     params)
        losses, params = [float(loss[0]) for loss in losses], dp.unreplicate(params)
    return [float(loss) for loss in losses], params, seen_shardings


@pytest.mark.parametrize("form", ["pmap", "jit", "shard_map"])
def test_data_parallel_step_equals_single_device(form, mesh, problem, reference):
    tx, ref_losses, ref_params = reference
    params, batches = problem
    losses, final_params, seen = run_form(form, tx, mesh, params, batches)
    np.testing.assert_allclose(losses, ref_losses, RTOL, ATOL)
    assert_trees_close(final_params, ref_params)
    # Params and optimizer state keep their shardings from step to step.
    for before, after in zip(seen[1:], seen[2:], strict=False):
        jax.tree.map(lambda a, b: a.is_equivalent_to(b, 2) or pytest.fail(f"{a} != {b}"),
                     before, after)
    if form != "pmap":
        for s in jax.tree.leaves(seen[-1]):
            assert s.is_fully_replicated, s


@pytest.mark.parametrize("form", ["pmap", "jit", "shard_map"])
def test_one_sgd_step_gives_the_full_batch_gradient(form, mesh, problem):
    # With SGD(lr=1), params_0 - params_1 is exactly the averaged gradient the step used.
    params, batches = problem
    ref_loss, ref_grads = dp.loss_and_grads(loss_fn)(params, batches[0])
    losses, new_params, _ = run_form(form, optax.sgd(1.0), mesh, params, batches[:1])
    np.testing.assert_allclose(losses[0], ref_loss, RTOL, ATOL)
    assert_trees_close(jax.tree.map(jnp.subtract, params, new_params), ref_grads)


def _fsdp_steps_match_single_device(tx, mesh, problem):
    """(params, optimizer state) after FSDP steps, checked equal to single-device steps."""
    params, batches = problem
    ref_step, ref_params, ref_state = dp.make_train_step(loss_fn, tx), params, tx.init(params)
    param_shardings = dp.fsdp_shardings(params, mesh)
    sharded = jax.device_put(params, param_shardings)
    opt_state = dp.init_opt_state(tx, sharded, mesh)
    step = dp.make_jit_train_step(loss_fn, tx, mesh, param_shardings=param_shardings)
    for batch in batches:
        ref_params, ref_state, _ = ref_step(ref_params, ref_state, batch)
        sharded, opt_state, _ = step(sharded, opt_state, dp.shard_batch(batch, mesh))
    assert_trees_close(sharded, ref_params)
    return sharded, opt_state


def test_fsdp_sharded_params_and_state_match_and_stay_sharded(mesh, problem):
    sharded, opt_state = _fsdp_steps_match_single_device(optax.adam(1e-2), mesh, problem)
    assert sharded["w1"].sharding.spec == jax.sharding.PartitionSpec(None, "data")
    # Adam's moments are sharded like the params they mirror: each device holds 1/8 of them.
    mu_w1 = opt_state[0].mu["w1"]
    assert mu_w1.sharding.spec == sharded["w1"].sharding.spec
    assert mu_w1.addressable_shards[0].data.shape == (4, 2)


def test_fsdp_learned_optimizer_state_stacks_are_sharded_like_their_params(mesh, problem):
    """A learned optimizer's per-entry state stacks K arrays shaped like the parameter
    ((K,) + shape: momenta at K decays): each slice is sharded like the parameter, and the FSDP
    step equals the single-device one."""
    sharded, opt_state = _fsdp_steps_match_single_device(_mlp_lopt(), mesh, problem)
    momenta, nu = opt_state.per_leaf.momenta["w1"], opt_state.per_leaf.nu["w1"]
    assert momenta.shape == (3, 4, 16)
    assert momenta.sharding.spec == jax.sharding.PartitionSpec(None, None, "data")
    assert momenta.addressable_shards[0].data.shape == (3, 4, 2)
    assert nu.sharding.spec == sharded["w1"].sharding.spec


def test_batch_not_divisible_names_the_sizes(mesh, problem):
    params, batches = problem
    tx = optax.sgd(0.1)
    bad = make_batch(jax.random.key(0), size=12)
    message = "batch size 12 is not divisible by the 'data' axis size 8"
    for make in (dp.make_jit_train_step, dp.make_shard_map_train_step):
        with pytest.raises(ValueError, match=message):
            make(loss_fn, tx, mesh)(params, tx.init(params), bad)
    with pytest.raises(ValueError, match=message):
        dp.shard_batch(bad, mesh)
    with pytest.raises(ValueError, match="batch size 12 is not divisible by the 'pmap devices'"):
        dp.shard_for_pmap(bad, 8)
    with pytest.raises(ValueError, match="disagree on the leading"):
        dp.batch_size_of({"x": jnp.ones((8, 2)), "y": jnp.ones((4,))})


def test_mesh_not_matching_devices_and_missing_axis(problem):
    with pytest.raises(ValueError, match="need 16 devices, but 8 are available"):
        mesh_lib.make_mesh({"data": 16})
    with pytest.raises(ValueError, match="no axis 'data'"):
        dp.make_jit_train_step(loss_fn, optax.sgd(0.1), mesh_lib.make_mesh({"model": 8}))


def test_dp_step_all_reduces_exactly_the_gradient_bytes(mesh, problem):
    # One all-reduce of every gradient plus the scalar loss, whichever form writes it.
    params, batches = problem
    tx = optax.sgd(0.1)
    expected = sum(x.size * 4 for x in jax.tree.leaves(params)) + 4
    batch = dp.shard_batch(batches[0], mesh)
    replicated = jax.device_put(params, mesh_lib.replicated(mesh))
    for make in (dp.make_jit_train_step, dp.make_shard_map_train_step):
        step = make(loss_fn, tx, mesh)
        stats = communication.communication_of(step, replicated, tx.init(params), batch)
        assert stats.by_op["all-reduce"].bytes == expected, stats.as_dict()
        assert stats.total_bytes == expected, stats.as_dict()
