"""Checkpoints resume bit-exactly and refuse incompatible configs; the pretrained format
round-trips and rejects unknown names, foreign files and corrupt weights."""

import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

sys.path.insert(0, os.path.dirname(__file__))

from toy import QuadraticFamily  # noqa: E402

import learned_opt as lo  # noqa: E402
from learned_opt import meta  # noqa: E402
from learned_opt.meta.checkpoint import MetaCheckpointer, keys_to_data  # noqa: E402
from learned_opt.pretrained import (  # noqa: E402
    list_pretrained,
    load_pretrained,
    load_pretrained_theta,
    save_pretrained,
)


def _leaves(state):
    return [np.asarray(x) for x in jax.tree.leaves(keys_to_data(state))]


def test_resume_is_exact_and_incompatible_config_refuses(tmp_path):
    lopt = lo.LearnedAdam(learning_rate=0.05)
    unroller = meta.TruncatedUnroller(QuadraticFamily(), (4,), lopt, unroll_length=3,
                                      schedule=meta.LogUniformSchedule(3, 12))
    trainer = meta.MetaTrainer(unroller, meta.PES(sigma=0.05), num_tasks=4,
                               mesh=meta.population_mesh(jax.devices()[:2]))
    theta = lopt.init(jax.random.key(0))
    ckpt = MetaCheckpointer(tmp_path, {"estimator": "pes", "num_tasks": 4})
    state = trainer.init(jax.random.key(0), theta)
    for step in range(1, 5):
        state, _ = trainer.step(state)
        if step == 2:
            ckpt.save(state)
    uninterrupted = _leaves(state)

    resumed = MetaCheckpointer(tmp_path, {"estimator": "pes", "num_tasks": 4}).restore(
        trainer.abstract_state(theta))
    assert int(resumed.step) == 2
    assert jnp.issubdtype(resumed.population.key.dtype, jax.dtypes.prng_key)
    for _ in range(2):
        resumed, _ = trainer.step(resumed)
    for a, b in zip(_leaves(resumed), uninterrupted, strict=True):
        np.testing.assert_array_equal(a, b)

    other = MetaCheckpointer(tmp_path, {"estimator": "tbptt", "num_tasks": 4})
    with pytest.raises(ValueError, match=r"incompatible(.|\n)*estimator: checkpoint has 'pes'"):
        other.restore(trainer.abstract_state(theta))


def test_pretrained_round_trip_and_errors(tmp_path):
    lopt = lo.LearnedAdam(per_tensor=True)
    theta = dict(lopt.init(jax.random.key(0)), log_lr=jnp.float32(-3.0))
    card_path = save_pretrained(tmp_path, "adam_test", lopt, theta, {"family": "toy"})
    loaded_lopt, loaded, card = load_pretrained_theta(card_path)
    assert loaded_lopt == lopt and card["family"] == "toy" and card["name"] == "adam_test"
    for key in theta:
        np.testing.assert_array_equal(np.asarray(loaded[key]), np.asarray(theta[key]))
    assert [c["name"] for c in list_pretrained(tmp_path)] == ["adam_test"]

    # The loaded transform is the same optimizer: identical updates.
    params = {"w": jnp.arange(6.0).reshape(2, 3)}
    grads = {"w": jnp.ones((2, 3))}
    ref_tx, tx = lopt.optimizer(theta), load_pretrained(tmp_path / "adam_test.msgpack")
    ref, _ = ref_tx.update(grads, ref_tx.init(params), params)
    got, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_allclose(got["w"], ref["w"], rtol=1e-6)
    assert isinstance(tx, optax.GradientTransformationExtraArgs)

    with pytest.raises(ValueError, match="no pretrained optimizer 'nope'"):
        load_pretrained("nope")
    foreign = tmp_path / "foreign.json"
    foreign.write_text(json.dumps({"hello": 1}))
    with pytest.raises(ValueError, match="not a learned_opt pretrained card"):
        load_pretrained_theta(foreign)
    weights = tmp_path / "adam_test.msgpack"
    weights.write_bytes(weights.read_bytes()[:-3] + b"xyz")
    with pytest.raises(ValueError, match="corrupt"):
        load_pretrained_theta(card_path)
