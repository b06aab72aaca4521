"""The feature library's statistics and state layout against plain numpy references."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from learned_opt import features as F


def _reference_stats(g: np.ndarray) -> dict:
    """GradStats computed the obvious way: non-finite entries count as zero."""
    finite = np.isfinite(g)
    masked = np.where(finite, g, 0.0).astype(np.float64)
    ref = {"all_finite": bool(finite.all()), "sq_sum": float(np.sum(masked ** 2)),
           "nonzero": float(np.sum(masked != 0)), "sq_sum_rows": np.sum(masked ** 2, axis=-1)}
    if g.ndim >= 2:
        ref["sq_sum_cols"] = np.sum(masked ** 2, axis=-2)
    return ref


def _gradient(shape, bad: bool, dtype=jnp.float32) -> jax.Array:
    rng = np.random.default_rng(0)
    g = rng.normal(size=shape).astype(np.float32)
    g[rng.uniform(size=shape) < 0.3] = 0.0  # some exact zeros for the non-zero count
    if bad:
        flat = g.reshape(-1)
        flat[1], flat[-1] = np.nan, -np.inf
    return jnp.asarray(g, dtype)


@pytest.mark.parametrize("shape", [(6, 5), (3, 4, 5), (7,), ()])
@pytest.mark.parametrize("bad", [False, True], ids=["finite", "nan_inf"])
def test_grad_stats_match_masked_numpy(shape, bad):
    if bad and shape == ():
        g = jnp.asarray(np.nan, jnp.float32)
    else:
        g = _gradient(shape, bad)
    stats = jax.jit(F.grad_stats)(g)
    ref = _reference_stats(np.asarray(g))
    assert bool(stats.all_finite) == ref["all_finite"]
    np.testing.assert_array_equal(np.asarray(stats.finite), np.isfinite(np.asarray(g)))
    np.testing.assert_allclose(float(stats.sq_sum), ref["sq_sum"], rtol=1e-5)
    assert float(stats.nonzero) == ref["nonzero"]
    if shape:
        np.testing.assert_allclose(np.asarray(stats.sq_sum_rows), ref["sq_sum_rows"], rtol=1e-5)
    if len(shape) >= 2:
        np.testing.assert_allclose(np.asarray(stats.sq_sum_cols), ref["sq_sum_cols"], rtol=1e-5)
    else:
        assert stats.sq_sum_cols is None


def test_grad_stats_in_half_precision_and_under_vmap():
    """bfloat16 gradients are summed in float32; under vmap (lax.cond becomes a select) each
    member gets its own masked or unmasked statistics."""
    g = _gradient((4, 6), bad=False, dtype=jnp.bfloat16)
    stats = jax.jit(F.grad_stats)(g)
    np.testing.assert_allclose(float(stats.sq_sum),
                               float(np.sum(np.asarray(g, np.float32) ** 2)), rtol=1e-5)
    batch = jnp.stack([_gradient((4, 6), bad=False), _gradient((4, 6), bad=True)])
    batched = jax.vmap(F.grad_stats)(batch)
    for i in range(2):
        ref = _reference_stats(np.asarray(batch[i]))
        assert bool(batched.all_finite[i]) == ref["all_finite"]
        np.testing.assert_allclose(float(batched.sq_sum[i]), ref["sq_sum"], rtol=1e-5)
        np.testing.assert_allclose(np.asarray(batched.sq_sum_cols[i]), ref["sq_sum_cols"],
                                   rtol=1e-5)


def test_grad_stats_are_differentiable():
    """Meta-gradients (TBPTT) flow through the statistics: d sq_sum / d g = 2 g."""
    g = _gradient((3, 4), bad=False)
    grad = jax.grad(lambda g: F.grad_stats(g).sq_sum + jnp.sum(F.grad_stats(g).sq_sum_cols))(g)
    np.testing.assert_allclose(np.asarray(grad), 4.0 * np.asarray(g), rtol=1e-6)


def test_accumulator_stacks_lead_and_match_per_decay_emas():
    """Momenta and factored statistics at K decays are stacked on a leading axis; each slice is
    the EMA at its own decay."""
    decays = jnp.asarray([0.5, 0.9, 0.99])
    g = _gradient((5, 3), bad=False)
    m = F.update_momenta(jnp.ones((3, 5, 3)), g, decays)
    assert m.shape == (3, 5, 3)
    for k, d in enumerate(np.asarray(decays)):
        np.testing.assert_allclose(np.asarray(m[k]), d + (1 - d) * np.asarray(g), rtol=1e-6)
    v = F.update_second_moment(jnp.zeros((3, 5, 3)), g, decays)
    np.testing.assert_allclose(np.asarray(v[2]), 0.01 * np.asarray(g) ** 2, rtol=1e-5)

    fac = F.update_factored(F.init_factored(g, 3), g, decays, F.grad_stats(g))
    assert fac.row.shape == (3, 5) and fac.col.shape == (3, 3)
    g2 = np.asarray(g, np.float64) ** 2 + F.FACTORED_EPS
    for k, d in enumerate(np.asarray(decays)):
        np.testing.assert_allclose(np.asarray(fac.row[k]), (1 - d) * g2.mean(axis=1), rtol=1e-5)
        np.testing.assert_allclose(np.asarray(fac.col[k]), (1 - d) * g2.mean(axis=0), rtol=1e-5)
    # v_hat = row * col / mean(row), per decay
    r = np.asarray(F.factored_rsqrt(fac, g.shape))
    row, col = np.asarray(fac.row, np.float64), np.asarray(fac.col, np.float64)
    v_hat = row[:, :, None] * col[:, None, :] / row.mean(axis=1)[:, None, None]
    np.testing.assert_allclose(r, 1.0 / np.sqrt(v_hat), rtol=1e-4)


def test_keep_finite_broadcasts_the_mask_over_a_stack():
    finite = jnp.asarray([[True, False], [True, True]])
    new, old = jnp.ones((3, 2, 2)), jnp.zeros((3, 2, 2))
    kept = np.asarray(F.keep_finite(finite, new, old))
    assert kept[:, 0, 1].tolist() == [0.0, 0.0, 0.0]
    assert kept.sum() == 9.0
