"""The pure-function LM: shapes, causality, and the hooks parallel code fills in."""

import jax
import jax.numpy as jnp
import numpy as np

from models import functional_lm as lm

CONFIG = lm.LMConfig(vocab=16, dim=8, num_heads=2, head_dim=4, hidden=16, num_layers=2, max_len=6)


def test_logits_are_causal_and_loss_starts_near_uniform():
    params = lm.init_lm(jax.random.key(0), CONFIG)
    tokens = jax.random.randint(jax.random.key(1), (3, CONFIG.max_len), 0, CONFIG.vocab)
    logits = lm.lm_logits(params, tokens)
    assert logits.shape == (3, CONFIG.max_len, CONFIG.vocab)
    changed = lm.lm_logits(params, tokens.at[:, -1].set((tokens[:, -1] + 1) % CONFIG.vocab))
    np.testing.assert_allclose(changed[:, :-1], logits[:, :-1], rtol=1e-6)
    assert not np.allclose(changed[:, -1], logits[:, -1])
    loss = lm.lm_loss(params, {"tokens": tokens})
    assert abs(float(loss) - np.log(CONFIG.vocab)) < 1.0, loss


def test_hooks_see_every_role_and_change_the_result_when_not_identity():
    params = lm.init_lm(jax.random.key(0), CONFIG)
    batch = {"tokens": jnp.arange(2 * CONFIG.max_len).reshape(2, -1) % CONFIG.vocab}
    roles = []
    lm.lm_loss(params, batch, constrain=lambda x, role: roles.append(role) or x)
    assert set(roles) == {"mlp_hidden", "heads", "residual"}
    reference = lm.lm_loss(params, batch)
    # `reduce` is applied to each attention and MLP output: doubling them changes the loss.
    assert not np.isclose(lm.lm_loss(params, batch, reduce=lambda x: 2 * x), reference)
    np.testing.assert_allclose(lm.lm_loss(params, batch, reduce=lambda x: x), reference)
