"""NormMLPLOpt: scale-free inputs and output, learning-rate magnitude, orthogonalised
matrices, AdamW routing (the shared behaviour checks are in test_common.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import learned_opt as lo
from learned_opt import orthogonal


def params_and_loss():
    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.normal(size=(6, 10)), jnp.float32),
              "conv": jnp.asarray(rng.normal(size=(3, 3, 2, 4)), jnp.float32),
              "b": jnp.asarray(rng.normal(size=(10,)), jnp.float32)}
    target = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)

    def loss(p):
        return sum(jnp.sum((i + 1.0) * jnp.square(a - t)) for i, (a, t) in enumerate(
            zip(jax.tree.leaves(p), jax.tree.leaves(target), strict=True)))
    return params, loss


def perturbed_theta(lopt):
    """Default theta plus noise, so the network (not only the skip path) shapes the update."""
    theta = lopt.init(jax.random.key(0))
    leaves, treedef = jax.tree.flatten(theta)
    rng = np.random.default_rng(3)
    return treedef.unflatten([x + 0.3 * rng.normal(size=x.shape).astype(np.float32)
                              for x in leaves])


def run(lopt, theta, grad_scale=1.0, steps=4, **kwargs):
    params, loss = params_and_loss()
    tx = lopt.optimizer(theta, **kwargs)
    update = jax.jit(tx.update)
    state, out = tx.init(params), []
    for _ in range(steps):
        grads = jax.tree.map(lambda g: grad_scale * g, jax.grad(loss)(params))
        u, state = update(grads, state, params)
        out.append(u)
        params = optax.apply_updates(params, u)
    return out


@pytest.mark.parametrize("orthogonalize", [True, False])
def test_scaling_every_gradient_leaves_the_update_unchanged(orthogonalize):
    lopt = lo.NormMLPLOpt(orthogonalize=orthogonalize)
    theta = perturbed_theta(lopt)
    reference = run(lopt, theta)
    for c in (1e-3, 7.0, 1e3):
        for a, b in zip(jax.tree.leaves(run(lopt, theta, grad_scale=c)),
                        jax.tree.leaves(reference), strict=True):
            np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-6 * lopt.step_mult)


def test_update_rms_is_the_learning_rate_and_no_horizon_is_needed():
    lopt = lo.NormMLPLOpt(orthogonalize=False)
    theta = perturbed_theta(lopt)
    updates = run(lopt, theta, learning_rate=0.02, steps=2)
    for u in jax.tree.leaves(updates):
        np.testing.assert_allclose(float(jnp.sqrt(jnp.mean(jnp.square(u)))), 0.02, rtol=1e-4)
    # num_steps never enters the network (no horizon features): given a schedule, or with the
    # constant default schedule, it changes nothing.
    schedule = optax.linear_schedule(0.02, 0.01, 10)
    for kwargs in ({"learning_rate": schedule}, {}):
        constant = lo.NormMLPLOpt(orthogonalize=False, default_schedule="constant")
        for a, b in zip(jax.tree.leaves(run(constant, theta, num_steps=123, steps=2, **kwargs)),
                        jax.tree.leaves(run(lopt, theta, steps=2, **kwargs)), strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("learning_rate", [None, 0.02])
def test_given_the_horizon_a_float_rate_is_the_peak_of_a_warmup_cosine(learning_rate):
    lopt, num_steps = lo.NormMLPLOpt(orthogonalize=False), 40
    theta = perturbed_theta(lopt)
    peak = lopt.step_mult if learning_rate is None else learning_rate
    kwargs = {} if learning_rate is None else {"learning_rate": learning_rate}
    got = run(lopt, theta, num_steps=num_steps, steps=6, **kwargs)
    expected = optax.warmup_cosine_decay_schedule(0.0, peak, warmup_steps=2,
                                                  decay_steps=num_steps)
    want = run(lopt, theta, learning_rate=expected, steps=6)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-9)
    for k, step_updates in enumerate(got):  # the RMS of every update follows the schedule
        for u in jax.tree.leaves(step_updates):
            np.testing.assert_allclose(float(jnp.sqrt(jnp.mean(jnp.square(u)))),
                                       float(expected(k)), rtol=1e-4, atol=1e-12)


def test_default_schedule_and_horizon_are_checked():
    with pytest.raises(ValueError, match="default_schedule"):
        lo.NormMLPLOpt(default_schedule="cosine")
    lopt = lo.NormMLPLOpt()
    theta = lopt.init(jax.random.key(0))
    with pytest.raises(ValueError, match="learning_rate"):
        lopt.optimizer(theta, num_steps=100, learning_rate=-1e-3)
    with pytest.raises(ValueError, match="num_steps"):
        lopt.optimizer(theta, num_steps=0)


def test_orthogonalize_gives_singular_values_near_one():
    rng = np.random.default_rng(5)
    for shape in [(32, 64), (64, 32), (3, 3, 8, 16)]:
        x = jnp.asarray(rng.normal(size=shape) * 13.0, jnp.float32)
        out = orthogonal.orthogonalize(x, ns_steps=5)
        assert out.shape == x.shape
        singular = np.linalg.svd(np.asarray(out).reshape(-1, shape[-1]), compute_uv=False)
        # optax's quintic Newton-Schulz: ~U S' V^T with S' in about [0.68, 1.2].
        assert 0.6 < singular.min() and singular.max() < 1.25, singular
        # ... and more iterations do not leave that band.
        more = orthogonal.orthogonalize(x, ns_steps=8)
        singular = np.linalg.svd(np.asarray(more).reshape(-1, shape[-1]), compute_uv=False)
        assert 0.6 < singular.min() and singular.max() < 1.25
    assert orthogonal.matrix_shape((3, 3, 8, 16)) == (72, 16)   # (kh*kw*c_in, c_out)
    assert not orthogonal.is_matrix((10,)) and not orthogonal.is_matrix((1, 10))
    with pytest.raises(ValueError, match="matrix"):
        orthogonal.orthogonalize(jnp.ones((10,)))


def test_newton_schulz_is_optaxs_iteration():
    """The Gram-factored first step computes optax's quintic Newton-Schulz iteration."""
    from optax.contrib._muon import orthogonalize_via_newton_schulz
    rng = np.random.default_rng(6)
    for shape in [(16, 32), (32, 16), (24, 24), (4, 8, 16)]:
        x = jnp.asarray(rng.normal(size=shape) * 3.0, jnp.float32)
        ns = jax.vmap(lambda m: orthogonalize_via_newton_schulz(
            m, jnp.asarray(orthogonal.NS_COEFFS), ns_steps=5))
        want = ns(x) if x.ndim == 3 else ns(x[None])[0]
        np.testing.assert_allclose(orthogonal.newton_schulz(x, 5), want, atol=2e-5)
    with pytest.raises(ValueError, match="ns_steps"):
        orthogonal.newton_schulz(jnp.ones((3, 3)), 0)


def test_orthogonalized_matrix_update_has_unit_rms_and_flatter_spectrum():
    def spectrum(orthogonalize):
        lopt = lo.NormMLPLOpt(orthogonalize=orthogonalize)
        # (0.1: far from the max_update bound of 1.0, which would clip entries)
        u = run(lopt, perturbed_theta(lopt), learning_rate=0.1, steps=1)[0]["w"]
        np.testing.assert_allclose(float(jnp.sqrt(jnp.mean(jnp.square(u)))), 0.1, rtol=1e-4)
        return np.linalg.svd(np.asarray(u), compute_uv=False)

    plain, orthogonalized = spectrum(False), spectrum(True)
    assert (orthogonalized.max() / orthogonalized.min()) < 0.5 * (plain.max() / plain.min())


def test_adamw_routing_for_vectors_matches_optax_adamw():
    lopt = lo.NormMLPLOpt(adamw_for_vectors=True)
    theta = perturbed_theta(lopt)
    routed = run(lopt, theta, learning_rate=3e-3, weight_decay=0.1, steps=3)
    unrouted = run(lo.NormMLPLOpt(), theta, learning_rate=3e-3, weight_decay=0.1, steps=3)
    params, loss = params_and_loss()
    adamw = optax.adamw(3e-3, weight_decay=0.1)
    state = adamw.init(params["b"])
    for step in range(3):
        grads = jax.grad(loss)(params)
        u, state = adamw.update(grads["b"], state, params["b"])
        np.testing.assert_allclose(routed[step]["b"], u, rtol=1e-5, atol=1e-9)
        for name in ("w", "conv"):   # matrices: the learned rule, unchanged by the routing
            np.testing.assert_allclose(routed[step][name], unrouted[step][name], rtol=1e-5,
                                       atol=1e-9)
        params = optax.apply_updates(params, routed[step])
    # A custom mask routes any tensor (e.g. an embedding).
    mask = lambda p: {"w": True, "conv": False, "b": False}  # noqa: E731
    custom = run(lo.NormMLPLOpt(), theta, learning_rate=3e-3, weight_decay=0.1,
                 adamw_mask=mask, steps=1)[0]
    assert not np.allclose(custom["w"], unrouted[0]["w"])
    np.testing.assert_allclose(custom["b"], unrouted[0]["b"], rtol=1e-5, atol=1e-9)
