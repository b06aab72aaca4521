"""Reparameterisation augmentation (models.augment): same loss, rescaled parameters."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import models
from models.augment import ReparamFamily


def test_loss_at_initial_params_unchanged_and_params_rescaled():
    base = models.get_family("digits_mlp")
    family = ReparamFamily(base, 1e-3, 1e3)
    group = base.groups("meta_train")[0]
    assert family.groups("meta_train") == base.groups("meta_train")
    scales = []
    for i in range(4):
        tp = family.sample_task_params(jax.random.key(i), group)
        task, plain = family.make_task(group, tp), base.make_task(group, tp["inner"])
        key, batch_key = jax.random.key(10 + i), jax.random.key(20 + i)
        params, plain_params = task.init(key), plain.init(key)
        batch = task.sample_batch(batch_key, "train")
        np.testing.assert_allclose(task.loss(params, batch), plain.loss(plain_params, batch),
                                   rtol=1e-5)
        scale = float(jnp.exp(tp["log_scale"]))
        assert 1e-3 <= scale <= 1e3
        scales.append(scale)
        for p, q in zip(jax.tree.leaves(params), jax.tree.leaves(plain_params), strict=True):
            np.testing.assert_allclose(p, scale * q, rtol=1e-6, atol=1e-30)
        # Gradients shrink by the same factor (what a learned optimizer must not memorise).
        g = jax.grad(task.loss)(params, batch)
        g_plain = jax.grad(plain.loss)(plain_params, batch)
        for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_plain), strict=True):
            np.testing.assert_allclose(a * scale, b, rtol=1e-3, atol=1e-6)
    assert max(scales) / min(scales) > 10  # the factor really varies across tasks


def test_vmappable_and_bad_range_rejected():
    family = ReparamFamily(models.get_family("quadratic"), 0.1, 10.0)
    group = family.groups("meta_train")[0]
    tps = jax.vmap(lambda k: family.sample_task_params(k, group))(
        jax.random.split(jax.random.key(0), 3))
    losses = jax.vmap(lambda tp, k: (lambda t: t.loss(t.init(k), t.sample_batch(k, "train")))(
        family.make_task(group, tp)))(tps, jax.random.split(jax.random.key(1), 3))
    assert losses.shape == (3,) and np.all(np.isfinite(losses))
    with pytest.raises(ValueError, match="min_scale"):
        ReparamFamily(models.get_family("quadratic"), 0.0, 1.0)
