"""The causal Transformer LM: causality, named sub-computations, per-block remat, learning."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import models
from models.debugging import overfit_one_batch, train_with_adam
from models.nets import Functional
from models.transformer import CHECKPOINT_NAMES, TransformerLM
from parallel import remat

SMALL = dict(seq_len=16, d_model=32, num_heads=2, num_layers=2, batch_size=8)


@pytest.fixture(scope="module")
def task():
    return models.get_task("text_transformer", **SMALL)


@pytest.fixture(scope="module")
def params_and_batch(task):
    return task.init(jax.random.key(0)), task.sample_batch(jax.random.key(1), "train")


@pytest.mark.slow
def test_text_transformer_learns_and_overfits_one_batch(task):
    result = train_with_adam(task, jax.random.key(0), steps=200, learning_rate=3e-3)
    assert result.initial_loss > 0.9 * np.log(task.corpus.vocab_size)  # starts near uniform
    assert result.final_loss < 0.75 * result.initial_loss, result[:2]
    one = overfit_one_batch(task, jax.random.key(1), steps=200, learning_rate=3e-3)
    assert one.final_loss < 0.1 * one.initial_loss, one[:2]


def test_outputs_are_causal(task, params_and_batch):
    params, batch = params_and_batch
    tokens = batch["tokens"][:, :-1]
    apply = jax.jit(task.net.apply)
    logits = apply(params, tokens)
    changed = tokens.at[:, 10:].set((tokens[:, 10:] + 1) % task.corpus.vocab_size)
    logits_changed = apply(params, changed)
    np.testing.assert_allclose(logits[:, :10], logits_changed[:, :10], atol=1e-5)
    assert not np.allclose(logits[:, 10:], logits_changed[:, 10:], atol=1e-3)


def test_every_checkpoint_name_is_tagged(task, params_and_batch):
    params, batch = params_and_batch
    assert remat.tagged_names(task.loss, params, batch) == set(CHECKPOINT_NAMES)


def test_per_block_remat_changes_the_program_not_the_gradients(task, params_and_batch):
    params, batch = params_and_batch
    rematted = models.get_task(
        "text_transformer", **SMALL, remat=(False, True), remat_policy="names:attn_out,mlp_out"
    )
    count_remat = lambda t: str(jax.make_jaxpr(jax.grad(t.loss))(params, batch)).count("remat")
    assert count_remat(task) == 0 and count_remat(rematted) >= 1
    all_blocks = models.get_task("text_transformer", **SMALL, remat=True)
    assert count_remat(all_blocks) > count_remat(rematted)
    expected = jax.jit(jax.grad(task.loss))(params, batch)
    got = jax.jit(jax.grad(rematted.loss))(params, batch)
    for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(got), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_bad_configurations_are_rejected():
    make = lambda **kw: Functional(lambda rngs: TransformerLM(97, 8, rngs=rngs, **kw))
    with pytest.raises(ValueError, match="one flag per block"):
        make(num_layers=2, remat=(True,))
    with pytest.raises(ValueError, match="divisible"):
        make(d_model=30, num_heads=4)
    net = make(num_layers=1, d_model=16)
    with pytest.raises(ValueError, match="exceeds the model's seq_len 8"):
        jax.eval_shape(net.apply, net.param_shapes(), jnp.zeros((1, 9), jnp.int32))
