"""One shared list of learned optimizers, every one run through the same behaviour checks.

The optax contrib `_common_test.py` pattern: each check is parametrized over ALL_LOPTS, and
compiled functions are shared per optimizer through module-scoped fixtures to keep the file fast.
"""

from __future__ import annotations

import re
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

import learned_opt as lo

NUM_STEPS = 50
ALL_LOPTS = [name for name in ("learned_adam", "mlp", "adafac_mlp", "lstm", "hyper", "norm_mlp")
             if name in lo.list_lopts()]


class Pair(NamedTuple):
    kernel: jax.Array
    bias: jax.Array


def make_params(dtype=jnp.float32, with_empty: bool = True):
    """A nested dict / list / NamedTuple tree with a 3-D, 2-D, 1-D, scalar and zero-size leaf."""
    rng = np.random.default_rng(0)
    params = {
        "dense": Pair(rng.normal(size=(4, 6)), rng.normal(size=(6,))),
        "blocks": [rng.normal(size=(2, 3, 4)), np.float32(0.5)],
    }
    if with_empty:
        params["empty"] = np.zeros((0, 3))
    return jax.tree.map(lambda x: jnp.asarray(x, dtype), params)


def quadratic_loss(params):
    """sum 0.5 * c * (p - 1)**2 with a different curvature c per tensor."""
    leaves = jax.tree.leaves(params)
    return sum(0.5 * (i + 1) * jnp.sum(jnp.square(p.astype(jnp.float32) - 1.0))
               for i, p in enumerate(leaves))


class Case(NamedTuple):
    lopt: lo.LearnedOptimizer
    theta: dict
    tx: optax.GradientTransformationExtraArgs
    step_fn: callable   # jitted (theta, grads, state, params, value) -> (updates, state)
    traces: list        # one entry per trace of `step_fn`

    def step(self, grads, state, params, value, theta=None):
        theta = self.theta if theta is None else theta
        return self.step_fn(theta, grads, state, params, jnp.float32(value))


@pytest.fixture(scope="module", params=ALL_LOPTS)
def case(request) -> Case:
    # NormMLPLOpt would put its default rate on a warmup from 0 over NUM_STEPS (a zero first
    # update): the shared contract is checked on its per-step rule at a constant rate, the
    # schedule in test_norm_mlp.py.
    kwargs = {"default_schedule": "constant"} if request.param == "norm_mlp" else {}
    lopt = lo.get_lopt(request.param, **kwargs)
    theta = lopt.init(jax.random.key(0))
    traces = []

    @jax.jit
    def step_fn(theta, grads, state, params, value):
        traces.append(1)
        return lopt.optimizer(theta, NUM_STEPS).update(grads, state, params, value=value)

    return Case(lopt, theta, lopt.optimizer(theta, num_steps=NUM_STEPS), step_fn, traces)


def small_params():
    """Two leaves: enough where the tree's shape does not matter, and fast to compile."""
    rng = np.random.default_rng(1)
    return {"w": jnp.asarray(rng.normal(size=(4, 6)), jnp.float32),
            "b": jnp.asarray(rng.normal(size=(6,)), jnp.float32)}


def run_steps(case: Case, params, num: int):
    state = case.tx.init(params)
    all_updates = []
    for _ in range(num):
        loss, grads = jax.value_and_grad(quadratic_loss)(params)
        updates, state = case.step(grads, state, params, loss)
        all_updates.append(updates)
        params = optax.apply_updates(params, updates)
    return params, state, all_updates


def assert_updates_close(a, b):
    """Equal up to float rounding, relative to the update's scale (Newton-Schulz
    orthogonalisation, norm_mlp, amplifies rounding differences of matmuls to ~1e-5)."""
    atol = 1e-9 + 3e-5 * float(np.max(np.abs(b)))
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=atol)


def shapes_of(tree):
    return jax.tree.map(lambda x: (jnp.shape(x), jnp.result_type(x)), tree)


def test_jit_state_is_stable_and_no_recompile(case):
    params = make_params()
    state0 = case.tx.init(params)
    run_steps(case, params, 1)
    traces_before = len(case.traces)
    params_end, state, updates = run_steps(case, params, 4)
    assert len(case.traces) == traces_before, "a jitted step recompiled: the state changed type"
    assert jax.tree.structure(state) == jax.tree.structure(state0)
    assert shapes_of(state) == shapes_of(state0)
    assert shapes_of(jax.eval_shape(case.tx.update, params, state0, params, value=1.0)[1]) == \
        shapes_of(state0)
    assert int(state.count) == 4
    # Every state array is its own buffer, so callers may donate the state to jit.
    state_leaves = jax.tree.leaves(state0)
    assert len({id(x) for x in state_leaves}) == len(state_leaves)
    donating = jax.jit(lambda g, s, p: case.tx.update(g, s, p, value=1.0), donate_argnums=1)
    jax.block_until_ready(donating(params, case.tx.init(params), params))
    for u, p in zip(jax.tree.leaves(updates[-1]), jax.tree.leaves(params), strict=True):
        assert u.shape == p.shape and u.dtype == p.dtype
        assert np.all(np.isfinite(u)) and np.all(np.abs(u) <= case.lopt.max_update)
    assert quadratic_loss(params_end) < quadratic_loss(params)


def test_deterministic(case):
    params = make_params()
    _, state_a, upd_a = run_steps(case, params, 2)
    _, state_b, upd_b = run_steps(case, params, 2)
    for a, b in zip(jax.tree.leaves((state_a, upd_a)), jax.tree.leaves((state_b, upd_b)),
                    strict=True):
        np.testing.assert_array_equal(a, b)


def test_default_theta_decreases_quadratic(case):
    params = small_params()
    start = float(quadratic_loss(params))
    losses = []
    state = case.tx.init(params)
    for _ in range(40):
        loss, grads = jax.value_and_grad(quadratic_loss)(params)
        updates, state = case.step(grads, state, params, loss)
        params = optax.apply_updates(params, updates)
        losses.append(float(loss))
    assert losses[-1] < 0.97 * start, losses
    assert np.all(np.diff(losses) < 0), "default optimizer should descend monotonically here"


def test_vmap_over_theta(case):
    params = small_params()
    thetas = [case.theta, jax.tree.map(lambda t: t * 1.05 + 0.01, case.theta)]
    stacked = jax.tree.map(lambda *t: jnp.stack(t), *thetas)
    grads = jax.grad(quadratic_loss)(params)
    state = case.tx.init(params)

    def one(theta):
        return case.lopt.optimizer(theta, NUM_STEPS).update(grads, state, params, value=3.0)

    batched_updates, batched_state = jax.jit(jax.vmap(one))(stacked)
    for i, theta in enumerate(thetas):
        updates, _ = case.step(grads, state, params, 3.0, theta=theta)
        for a, b in zip(jax.tree.leaves(updates), jax.tree.leaves(batched_updates), strict=True):
            # Relative to the update's scale: Newton-Schulz orthogonalisation (norm_mlp)
            # amplifies the rounding differences of batched vs unbatched matmuls to ~1e-5.
            atol = 1e-8 + 3e-5 * float(np.max(np.abs(a)))
            np.testing.assert_allclose(b[i], a, rtol=1e-5, atol=atol)
    # The two thetas give different updates: theta really is batched.
    u = jax.tree.leaves(batched_updates)[0]
    assert not np.allclose(u[0], u[1])


@pytest.mark.slow
def test_meta_gradient_finite_and_nonzero(case):
    # "dead" is a zero tensor the loss never reads (a zero-initialized bias of a dead unit): its
    # gradient, moments and norm are exactly 0, where a bare sqrt would make the meta-gradient NaN.
    # One live matrix and the dead vector cover the 2-D and 1-D paths; every further leaf adds
    # its own kernels to a backward pass whose XLA compile dominates this file's run time.
    params = {"live": {"w": small_params()["w"]}, "dead": jnp.zeros((3,))}

    def loss_fn(p):
        return quadratic_loss(p["live"])

    def unrolled_loss(theta):
        tx = case.lopt.optimizer(theta, NUM_STEPS)

        def one_step(carry, _):
            p, state = carry
            loss, grads = jax.value_and_grad(loss_fn)(p)
            updates, state = tx.update(grads, state, p, value=loss)
            return (optax.apply_updates(p, updates), state), loss

        (p, _), _ = jax.lax.scan(one_step, (params, tx.init(params)), length=3)
        return loss_fn(p)

    meta_grad = jax.jit(jax.grad(unrolled_loss))(case.theta)
    leaves = jax.tree.leaves(meta_grad)
    assert all(np.all(np.isfinite(g)) for g in leaves)
    assert sum(float(jnp.sum(jnp.abs(g))) for g in leaves) > 0


def test_inside_chain_multisteps_and_apply_if_finite(case):
    params = small_params()
    grads = jax.grad(quadratic_loss)(params)
    value = jnp.float32(2.0)

    # chain: value= reaches the learned optimizer; clipping happens first.
    chained = optax.chain(optax.clip_by_global_norm(1.0), case.tx)
    updates, _ = jax.jit(lambda g, s, p: chained.update(g, s, p, value=value, unused=1))(
        grads, chained.init(params), params)
    clipped, _ = optax.clip_by_global_norm(1.0).update(grads, optax.EmptyState())
    expected, _ = case.step(clipped, case.tx.init(params), params, value)
    jax.tree.map(assert_updates_close,
                 updates, expected)

    # MultiSteps: the 2nd call applies the learned optimizer to the mean gradient.
    multi = optax.MultiSteps(case.tx, every_k_schedule=2)
    ms_state = multi.init(params)
    ms_update = jax.jit(lambda g, s, p: multi.update(g, s, p, value=value))
    half = jax.tree.map(lambda g: 0.5 * g, grads)
    first, ms_state = ms_update(half, ms_state, params)
    assert all(np.all(u == 0) for u in jax.tree.leaves(first))
    second, _ = ms_update(jax.tree.map(lambda g: 1.5 * g, grads), ms_state, params)
    expected, _ = case.step(grads, case.tx.init(params), params, value)
    jax.tree.map(assert_updates_close,
                 second, expected)

    # apply_if_finite: a NaN step is skipped, the next finite one is the first real step.
    safe = optax.apply_if_finite(case.tx, max_consecutive_errors=3)
    safe_update = jax.jit(lambda g, s, p, v: safe.update(g, s, p, value=v))
    nan_grads = jax.tree.map(lambda g: jnp.full_like(g, jnp.nan), grads)
    skipped, safe_state = safe_update(nan_grads, safe.init(params), params, value)
    assert all(np.all(u == 0) for u in jax.tree.leaves(skipped))
    assert int(safe_state.notfinite_count) == 1
    real, _ = safe_update(grads, safe_state, params, value)
    jax.tree.map(assert_updates_close,
                 real, expected)


def test_orbax_round_trip(case, tmp_path):
    # Orbax cannot save zero-size arrays (of params or state), so this tree has none.
    params = small_params()
    _, state, _ = run_steps(case, params, 2)
    path = tmp_path / case.lopt.name
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(path, state)
        checkpointer.wait_until_finished()
        restored = checkpointer.restore(path, jax.tree.map(ocp.utils.to_shape_dtype_struct, state))
    assert jax.tree.structure(restored) == jax.tree.structure(state)
    jax.tree.map(np.testing.assert_array_equal, restored, state)
    grads = jax.grad(quadratic_loss)(params)
    a, _ = case.step(grads, state, params, 1.0)
    b, _ = case.step(grads, restored, params, 1.0)
    jax.tree.map(np.testing.assert_array_equal, a, b)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision_params(case, dtype):
    params = make_params(dtype)
    grads = jax.grad(quadratic_loss)(params)
    state = case.tx.init(params)
    assert all(s.dtype in (jnp.float32, jnp.int32) for s in jax.tree.leaves(state))
    updates, new_state = jax.jit(lambda g, s, p: case.tx.update(g, s, p, value=1.0))(
        grads, state, params)
    assert shapes_of(new_state) == shapes_of(state)
    # Same values in float32: the only difference is the final rounding to `dtype`.
    up = lambda t: jax.tree.map(lambda x: x.astype(jnp.float32), t)
    ref, _ = case.step(up(grads), case.tx.init(up(params)), up(params), 1.0)
    for u, r, p in zip(jax.tree.leaves(updates), jax.tree.leaves(ref), jax.tree.leaves(params),
                       strict=True):
        assert u.dtype == p.dtype
        np.testing.assert_allclose(np.asarray(u, np.float32), r, rtol=1e-2, atol=1e-6)


def test_non_finite_gradients_never_reach_params_or_state(case):
    params = make_params()
    _, state, _ = run_steps(case, params, 1)
    grads = jax.grad(quadratic_loss)(params)
    kernel = grads["dense"].kernel.at[1, 2].set(jnp.nan).at[3, 0].set(jnp.inf)
    bad = {**grads, "dense": Pair(kernel, grads["dense"].bias)}
    updates, new_state = case.step(bad, state, params, 1.0)
    for leaf in jax.tree.leaves((updates, new_state)):
        assert np.all(np.isfinite(leaf))
    assert updates["dense"].kernel[1, 2] == 0 and updates["dense"].kernel[3, 0] == 0
    assert np.any(updates["dense"].kernel != 0)
    # Per-entry state of the bad entries is unchanged; the rest of the tensor moved on.
    # Per-tensor state of that tensor is unchanged.
    changed = 0
    for field, old, new in zip(state.per_leaf._fields, state.per_leaf, new_state.per_leaf,
                               strict=True):
        old_k, new_k = old["dense"].kernel, new["dense"].kernel
        if field in case.lopt.per_tensor_fields:
            np.testing.assert_array_equal(new_k, old_k)
        else:
            # (K,) + shape for a stack of K per-entry arrays (e.g. momenta at K decays)
            assert old_k.shape[old_k.ndim - 2:] == (4, 6)
            np.testing.assert_array_equal(new_k[..., 1, 2], old_k[..., 1, 2])
            np.testing.assert_array_equal(new_k[..., 3, 0], old_k[..., 3, 0])
            changed += int(np.any(new_k != old_k))
    assert changed > 0


def test_config_rebuilds_the_architecture(case):
    import json

    config = json.loads(json.dumps(case.lopt.config()))
    assert config["name"] == case.lopt.name
    assert lo.get_lopt(**config) == case.lopt


def test_theta_from_another_architecture_is_rejected(case):
    other_name = next(n for n in lo.list_lopts() if n != case.lopt.name)
    other = lo.get_lopt(other_name)
    with pytest.raises(ValueError, match="does not belong to") as info:
        case.lopt.optimizer(other.init(jax.random.key(0)), num_steps=NUM_STEPS)
    assert type(case.lopt).__name__ in str(info.value)
    assert type(other).__name__ in str(info.value)


def test_params_that_do_not_match_the_state_are_rejected(case):
    params = make_params()
    state = case.tx.init(params)
    grads = jax.grad(quadratic_loss)(params)
    fewer = {k: v for k, v in params.items() if k != "empty"}
    with pytest.raises(ValueError, match="different tree structures|do not match"):
        case.tx.update(jax.grad(quadratic_loss)(fewer), state, params, value=1.0)
    with pytest.raises(ValueError, match="do not match the optimizer state"):
        case.tx.update(jax.grad(quadratic_loss)(fewer), state, fewer, value=1.0)
    reshaped = {**params, "blocks": [jnp.ones((2, 3, 5)), params["blocks"][1]]}
    with pytest.raises(ValueError, match="shape"):
        case.tx.update(jax.grad(quadratic_loss)(reshaped), state, reshaped, value=1.0)
    with pytest.raises(ValueError, match="needs params"):
        case.tx.update(grads, state, value=1.0)


def test_missing_value_and_num_steps(case):
    params = make_params()
    grads = jax.grad(quadratic_loss)(params)
    state = case.tx.init(params)
    if case.lopt.needs_value:
        with pytest.raises(ValueError, match="value=loss"):
            case.tx.update(grads, state, params)
        with pytest.raises(ValueError, match="value=loss"):
            chained = optax.chain(optax.identity(), case.tx)
            chained.update(grads, chained.init(params), params)
    else:
        jax.eval_shape(lambda: case.tx.update(grads, state, params))  # value is optional
    if case.lopt.needs_num_steps:
        with pytest.raises(ValueError, match="num_steps"):
            case.lopt.optimizer(case.theta)
    else:
        jax.eval_shape(lambda: case.lopt.optimizer(case.theta).update(grads, state, params,
                                                                      value=1.0))


def test_registry_errors():
    with pytest.raises(ValueError, match="valid names") as info:
        lo.get_lopt("adam2")
    for name in ALL_LOPTS:
        assert name in str(info.value)
    with pytest.raises(TypeError, match="valid"):
        lo.get_lopt("mlp", hidden=3)


def test_sharded_params_keep_sharding_and_match_unsharded(case):
    from parallel.mesh import make_mesh, named

    mesh = make_mesh({"data": 8})
    rng = np.random.default_rng(2)
    specs = {"rows": (64, 8), "cols": (8, 64), "vec": (128,), "scalar": ()}
    params = {k: jnp.asarray(rng.normal(size=s), jnp.float32) for k, s in specs.items()}
    shardings = {"rows": named(mesh, "data", None), "cols": named(mesh, None, "data"),
                 "vec": named(mesh, "data"), "scalar": named(mesh)}
    sharded = jax.device_put(params, shardings)
    grads = jax.device_put(jax.grad(quadratic_loss)(params), shardings)
    state = case.tx.init(sharded)
    step = jax.jit(lambda g, s, p: case.tx.update(g, s, p, value=1.5))
    updates, new_state = step(grads, state, sharded)

    for name, u in updates.items():
        assert u.sharding.is_equivalent_to(shardings[name], u.ndim), name
    # Per-entry state stays sharded like its parameter (before and after the step).
    for field, old_tree, new_tree in zip(state.per_leaf._fields, state.per_leaf,
                                         new_state.per_leaf, strict=True):
        if field in case.lopt.per_tensor_fields:
            continue
        for name, p in sharded.items():
            local = p.sharding.shard_shape(p.shape)
            for leaf in (old_tree[name], new_tree[name]):
                # (a stack of K per-entry arrays, e.g. momenta at K decays, leads: (K,) + shape)
                local_leaf = leaf.sharding.shard_shape(leaf.shape)
                assert local_leaf[leaf.ndim - p.ndim:] == local, (field, name)
    # No parameter-sized tensor is ever gathered: per-tensor statistics are reductions. (XLA
    # partitions a variadic reduction -- several statistics in one pass -- by gathering the
    # per-device partial results, (devices x output) values, far fewer than any tensor here.)
    hlo = step.lower(grads, state, sharded).compile().as_text()
    smallest = min(int(np.prod(s)) for s in specs.values() if s)
    for shape in re.findall(r"= \w+\[([\d,]*)\]\S* all-gather\(", hlo):
        size = int(np.prod([int(d) for d in shape.split(",") if d]))
        assert size < smallest, f"an all-gather of {size} values: {shape}"
    # Per-tensor statistics (norms, Adafactor rows/columns) equal the unsharded computation.
    reference, ref_state = case.step(jax.grad(quadratic_loss)(params), case.tx.init(params),
                                     params, 1.5)
    for a, b in zip(jax.tree.leaves((updates, new_state)), jax.tree.leaves((reference, ref_state)),
                    strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


def test_learning_rate_scales_update_and_follows_schedule(case):
    params = small_params()
    grads = jax.grad(quadratic_loss)(params)
    nominal = float(case.lopt.nominal_step_size(case.theta))

    def updates(learning_rate, steps=3):
        tx = case.lopt.optimizer(case.theta, NUM_STEPS, learning_rate=learning_rate)
        update = jax.jit(lambda g, s, p: tx.update(g, s, p, value=1.0))
        state, out = tx.init(params), []
        for _ in range(steps):
            u, state = update(grads, state, params)
            out.append(u)
        return out

    default = updates(None)
    # The nominal step size is the default: same updates (bit for bit up to x * (a / a)).
    for a, b in zip(jax.tree.leaves(updates(nominal)), jax.tree.leaves(default), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-12)
    # Linear in the learning rate (no update entry is near the max_update bound here).
    for a, b in zip(jax.tree.leaves(updates(0.5 * nominal)), jax.tree.leaves(default),
                    strict=True):
        np.testing.assert_allclose(a, 0.5 * b, rtol=1e-5, atol=1e-12)
    # A schedule of the 0-based update index, as optax.scale_by_learning_rate.
    factors = [1.0, 0.5, 0.25]
    schedule = optax.exponential_decay(nominal, transition_steps=1, decay_rate=0.5)
    for k, (scheduled, plain) in enumerate(zip(updates(schedule), default, strict=True)):
        for a, b in zip(jax.tree.leaves(scheduled), jax.tree.leaves(plain), strict=True):
            np.testing.assert_allclose(a, factors[k] * b, rtol=1e-5, atol=1e-12)
    # A warmup from 0 (optax's usual schedules start there): the first update is zero.
    warmup = optax.linear_schedule(0.0, nominal, transition_steps=2)
    for k, (scheduled, plain) in enumerate(zip(updates(warmup), default, strict=True)):
        for a, b in zip(jax.tree.leaves(scheduled), jax.tree.leaves(plain), strict=True):
            np.testing.assert_allclose(a, [0.0, 0.5, 1.0][k] * b, rtol=1e-5, atol=1e-12)
    for bad in (0.0, -1e-3, float("nan"), float("inf"), lambda step: 0.0 * step - 1e-3,
                lambda step: 0.0 * step + float("nan")):
        with pytest.raises(ValueError, match="learning_rate"):
            case.lopt.optimizer(case.theta, NUM_STEPS, learning_rate=bad)
