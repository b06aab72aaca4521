"""A mixture of shape groups meta-trains one theta: one sub-population per group, the
meta-gradient is the average of the groups' meta-gradients (sharded over 8 devices, against
each group alone on 1 device), and a checkpoint of the tuple-shaped state resumes exactly."""

import os
import sys

import jax
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))

from toy import QuadraticFamily  # noqa: E402

import learned_opt as lo  # noqa: E402
from learned_opt import meta  # noqa: E402
from learned_opt.meta import aggregation  # noqa: E402
from learned_opt.meta.checkpoint import MetaCheckpointer, keys_to_data  # noqa: E402

FAMILY = QuadraticFamily(dim=4, noise=0.1)
LOPT = lo.LearnedAdam(learning_rate=0.05)
THETA = LOPT.init(jax.random.key(0))
GROUPS = ((3,), (5,))  # two static shapes: they cannot share one vmapped population


def _unrollers():
    return [meta.TruncatedUnroller(FAMILY, g, LOPT, unroll_length=3,
                                   schedule=meta.ConstantSchedule(6)) for g in GROUPS]


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(keys_to_data(tree))]


@pytest.fixture(scope="module")
def run():
    """An 8-device mixture trainer and its state after 3 PES steps."""
    trainer = meta.MetaTrainer(_unrollers(), meta.PES(sigma=0.05), num_tasks=8,
                               outer_tx=meta.default_outer_tx(0.01))
    state = trainer.init(jax.random.key(0), THETA)
    history = []
    for _ in range(3):
        state, metrics = trainer.step(state)
        history.append(jax.tree.map(np.asarray, metrics))
    return trainer, state, history


def test_sharded_mixture_meta_gradient_is_the_mean_of_the_group_meta_gradients():
    unrollers = _unrollers()
    pes = meta.PES(sigma=0.05)
    populations = tuple(
        jax.vmap(lambda k, u=u: u.init_task(k, THETA, 2))(jax.random.split(jax.random.key(g), 8))
        for g, u in enumerate(unrollers))
    est_states = tuple(pes.init(THETA, 8) for _ in unrollers)
    # The mixture over all 8 devices, each group's population split over them on its own...
    mixture_fn = meta.sharded_meta_grad(pes, tuple(unrollers), meta.population_mesh(), 16)
    grad, new_est, new_pop, metrics = jax.jit(mixture_fn)(THETA, est_states, populations)
    assert isinstance(new_pop, tuple) and len(new_pop) == 2 and isinstance(new_est, tuple)
    assert len(new_pop[1].step.sharding.device_set) == 8
    # ...against each group alone on one device.
    singles = [jax.jit(lambda e, p, u=u: aggregation.meta_grad(pes, u, THETA, e, p))(e, p)
               for u, e, p in zip(unrollers, est_states, populations, strict=True)]
    for leaf, *group_leaves in zip(jax.tree.leaves(grad),
                                   *[jax.tree.leaves(s[0]) for s in singles], strict=True):
        np.testing.assert_allclose(leaf, np.mean(group_leaves, axis=0), rtol=1e-5, atol=1e-8)
    assert np.abs(jax.tree.leaves(singles[0][0])[0] - jax.tree.leaves(singles[1][0])[0]).max(
        ) > 0, "the two groups should not give the same meta-gradient"
    for g, single in enumerate(singles):
        np.testing.assert_allclose(metrics[f"meta_loss_group{g}"], single[3]["meta_loss"],
                                   rtol=1e-6)
        for a, b in zip(_leaves((new_pop[g], new_est[g])), _leaves(single[2:0:-1]),
                        strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(metrics["meta_loss"],
                               np.mean([s[3]["meta_loss"] for s in singles]), rtol=1e-6)
    assert int(metrics["num_resets"]) == sum(int(s[3]["num_resets"]) for s in singles)


def test_mixture_trainer_steps_every_group(run):
    trainer, state, history = run
    assert trainer.total_tasks == 16 and len(trainer.unrollers) == 2
    assert len(state.population) == 2 and len(state.est_state) == 2
    assert len(state.population[1].step.sharding.device_set) == 8
    assert state.population[0].inner.params["x"].shape == (8, 2, 3)
    assert state.population[1].inner.params["x"].shape == (8, 2, 5)
    for metrics in history:
        assert metrics["grad_norm"] > 0 and int(metrics["skipped"]) == 0
        assert {"meta_loss_group0", "meta_loss_group1"} <= set(metrics)
    assert any(np.any(a != b) for a, b in zip(_leaves(state.theta), _leaves(THETA),
                                              strict=True))
    assert int(state.num_resets) >= 16  # 3 steps of K=3, horizon 6: every task reset


def test_mixture_checkpoint_resumes_exactly(run, tmp_path):
    trainer, state, _ = run
    ckpt = MetaCheckpointer(tmp_path, {"groups": [list(g) for g in GROUPS]})
    ckpt.save(state)
    restored = ckpt.restore(trainer.abstract_state(THETA))
    for a, b in zip(_leaves(restored), _leaves(state), strict=True):
        np.testing.assert_array_equal(a, b)
    continued, _ = trainer.step(restored)
    again, _ = trainer.step(ckpt.restore(trainer.abstract_state(THETA)))
    for a, b in zip(_leaves(continued), _leaves(again), strict=True):
        np.testing.assert_array_equal(a, b)
    refused = MetaCheckpointer(tmp_path, {"groups": [[3]]})
    with pytest.raises(ValueError, match="groups: checkpoint has"):
        refused.restore(trainer.abstract_state(THETA))


def test_mixture_groups_must_share_the_unroll_setup():
    a, b = _unrollers()
    other = meta.TruncatedUnroller(FAMILY, (5,), LOPT, unroll_length=4,
                                   schedule=meta.ConstantSchedule(8))
    with pytest.raises(ValueError, match="must share unroll_length"):
        meta.MetaTrainer([a, other], meta.PES(), num_tasks=8)
    del b


def test_mixture_is_an_explicit_type_checked_at_construction():
    a, b = _unrollers()
    mixture = meta.Mixture((a, b))
    assert aggregation.as_mixture([a, b]) == mixture and aggregation.as_mixture(a) is a
    trainer = meta.MetaTrainer(mixture, meta.PES(), num_tasks=8)
    assert trainer.unroller == mixture and trainer.unrollers == (a, b)
    assert trainer.total_tasks == 16
    with pytest.raises(ValueError, match="at least one unroller"):
        meta.Mixture(())
    with pytest.raises(TypeError, match="holds TruncatedUnrollers, got str"):
        meta.Mixture((a, "b"))
    with pytest.raises(TypeError, match="unroller must be a TruncatedUnroller"):
        meta.MetaTrainer(object(), meta.PES(), num_tasks=8)
