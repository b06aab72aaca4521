"""The outer loop: LearnedAdam learns the grid-search learning rate, 8 devices == 1 device,
non-finite meta-gradients are skipped and counted, tasks reset at their horizon, a segment's
batches drawn at once are the ones each step would draw."""

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

import models

sys.path.insert(0, os.path.dirname(__file__))

from toy import QuadraticFamily  # noqa: E402

import learned_opt as lo  # noqa: E402
from learned_opt import meta  # noqa: E402
from learned_opt.meta import population  # noqa: E402
from learned_opt.meta import trainer as trainer_lib  # noqa: E402

FAMILY = QuadraticFamily(dim=4, noise=0.1)


def test_learned_adam_learns_the_grid_search_learning_rate():
    # A full unroll (K = horizon) makes TBPTT the exact gradient of the objective the grid
    # search scores, so the two must agree on the best learning rate.
    horizon = 20
    lopt = lo.LearnedAdam(learning_rate=0.01, max_update=10.0)
    unroller = meta.TruncatedUnroller(FAMILY, (4,), lopt, unroll_length=horizon,
                                      schedule=meta.ConstantSchedule(horizon))
    tbptt = meta.TBPTT()
    # Only the learning rate is meta-trained: the grid search varies nothing else.
    labels = {k: "train" if k == "log_lr" else "freeze" for k in lopt.init(jax.random.key(0))}
    outer_tx = optax.multi_transform(
        {"train": meta.default_outer_tx(0.15), "freeze": optax.set_to_zero()}, labels)
    # One device: 8 devices == 1 device is tested below, and 60 un-synchronised sharded steps on
    # 8 simulated CPU devices sharing 2 busy cores have deadlocked XLA's all-reduce rendezvous
    # (7 of 8 device threads arrived; the process aborts after 40 s).
    trainer = meta.MetaTrainer(unroller, tbptt, num_tasks=8, outer_tx=outer_tx,
                               mesh=meta.population_mesh(jax.devices()[:1]))
    state = trainer.init(jax.random.key(0), lopt.init(jax.random.key(0)))
    for _ in range(60):
        state, _ = trainer.step(state)
    learned = float(state.theta["log_lr"])

    num_eval = 256
    keys = jax.random.split(jax.random.key(123), num_eval)
    population = jax.vmap(lambda k: unroller.new_trajectory(k, state.theta, 1))(keys)

    @jax.jit
    def score(log_lr):
        return meta.evaluate(unroller, dict(state.theta, log_lr=log_lr), population)["meta_loss"]

    grid = np.linspace(np.log(1e-3), np.log(3.0), 33)
    scores = np.array([float(score(x)) for x in grid])
    best = grid[np.argmin(scores)]
    assert grid[0] < best < grid[-1], "grid optimum on the grid's edge: widen the grid"
    assert abs(learned - best) < np.log(2.0), (np.exp(learned), np.exp(best))
    assert float(score(learned)) <= scores.min() * 1.02
    assert learned > np.log(0.01) + 1.0, "meta-training did not move the learning rate"


def _run(mesh, estimator, steps=2):
    lopt = lo.LearnedAdam(learning_rate=0.05)
    unroller = meta.TruncatedUnroller(FAMILY, (4,), lopt, unroll_length=3,
                                      schedule=meta.ConstantSchedule(6))
    trainer = meta.MetaTrainer(unroller, estimator, num_tasks=8, mesh=mesh,
                               outer_tx=meta.default_outer_tx(0.01))
    state = trainer.init(jax.random.key(0), lopt.init(jax.random.key(0)))
    grad_norms = []
    for _ in range(steps):
        state, metrics = trainer.step(state)
        grad_norms.append(float(metrics["grad_norm"]))
    return state, grad_norms


def test_eight_devices_give_the_one_device_meta_gradient():
    assert len(jax.devices()) == 8
    estimator = meta.PES(sigma=0.05)
    state8, norms8 = _run(meta.population_mesh(), estimator, steps=3)
    state1, norms1 = _run(meta.population_mesh(jax.devices()[:1]), estimator, steps=3)
    assert len(state8.population.step.sharding.device_set) == 8
    np.testing.assert_allclose(norms8, norms1, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(state8.theta), jax.tree.leaves(state1.theta), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)
    for a, b in zip(jax.tree.leaves(state8.est_state), jax.tree.leaves(state1.est_state),
                    strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)
    # 3 steps of K=3 on horizon-6 staggered tasks: every task reset at least once.
    assert int(state8.num_resets) == int(state1.num_resets) >= 8
    assert np.all(np.asarray(state8.population.step) <= np.asarray(state8.population.horizon))


def _small_trainer(family, theta_overrides, estimator):
    lopt = lo.LearnedAdam(learning_rate=0.05)
    unroller = meta.TruncatedUnroller(family, (4,), lopt, unroll_length=3,
                                      schedule=meta.ConstantSchedule(6))
    trainer = meta.MetaTrainer(unroller, estimator, num_tasks=8,
                               mesh=meta.population_mesh(jax.devices()[:2]))
    theta = dict(lopt.init(jax.random.key(0)), **theta_overrides)
    return trainer, trainer.init(jax.random.key(0), theta)


def test_non_finite_meta_gradient_is_skipped_and_counted():
    # An infinite learning rate: bounded updates keep params finite, but the meta-gradient
    # through inf * 0 is NaN and must not reach theta.
    trainer, state = _small_trainer(FAMILY, {"log_lr": jnp.float32(1e3)}, meta.TBPTT())
    before = jax.tree.map(np.asarray, state.theta)
    state, metrics = trainer.step(state)
    assert int(state.num_skipped) == 1 and int(metrics["skipped"]) == 1
    for a, b in zip(jax.tree.leaves(state.theta), jax.tree.leaves(before), strict=True):
        np.testing.assert_array_equal(np.asarray(a), b)
    state, _ = trainer.step(state)
    assert int(state.num_skipped) == 2


def test_non_finite_inner_loss_is_capped_counted_and_reset():
    family = QuadraticFamily(dim=4, noise=0.1, nan_loss=True)
    trainer, state = _small_trainer(family, {}, meta.PES(sigma=0.01))
    state, metrics = trainer.step(state)
    assert int(state.num_nonfinite_inner) == 16  # both particles of all 8 tasks
    assert float(metrics["meta_loss"]) == trainer.unroller.objective.clip  # capped, not NaN
    assert int(state.num_skipped) == 0  # all terms capped: a zero, finite meta-gradient
    state, metrics = trainer.step(state)
    assert int(metrics["num_resets"]) == 8  # every diverged task was replaced


def test_segment_batches_are_the_batches_each_step_draws():
    # A digits task: batches are gathered rows of its data (a data subset, by index).
    family = models.get_family("digits_mlp")
    group = next(iter(family.groups("meta_train")))
    unroller = meta.TruncatedUnroller(family, group, lo.LearnedAdam(), unroll_length=3,
                                      schedule=meta.ConstantSchedule(30))
    state = unroller.init_task(jax.random.key(0), lo.LearnedAdam().init(jax.random.key(0)), 1)
    state = state._replace(step=jnp.asarray(6, jnp.int32))
    task = family.make_task(group, state.task_params)
    for split, stream, first in (("train", 0, 0), ("valid", 1, 1)):
        stacked = population.segment_batches(task, state, split, first, 4)
        for i in range(4):
            one = task.sample_batch(population.step_key(state.traj_key, 6 + first + i, stream),
                                    split)
            for name in one:
                np.testing.assert_array_equal(stacked[name][i], one[name])
        assert not np.array_equal(stacked["x"][0], stacked["x"][1])  # a new batch per step


def test_cpu_compiler_options_by_estimator_and_the_same_step():
    # TBPTT on a CPU compiles with YNNPACK fusing dots only; ES / PES keep XLA's defaults;
    # {} asks for XLA's defaults explicitly. The options change speed, not what is computed.
    lopt = lo.LearnedAdam(learning_rate=0.05)
    theta = lopt.init(jax.random.key(0))
    unroller = meta.TruncatedUnroller(FAMILY, (4,), lopt, unroll_length=4,
                                      schedule=meta.ConstantSchedule(8))
    mesh = meta.population_mesh(jax.devices()[:1])
    make = lambda est, **kw: meta.MetaTrainer(unroller, est, num_tasks=2, mesh=mesh, **kw)
    assert make(meta.TBPTT()).compiler_options == trainer_lib.CPU_BACKPROP_COMPILER_OPTIONS
    assert make(meta.PES()).compiler_options is None
    assert make(meta.TBPTT(), compiler_options={}).compiler_options is None
    thetas = []
    for options in (None, {}):
        trainer = make(meta.TBPTT(), compiler_options=options)
        state = trainer.init(jax.random.key(1), theta)
        for _ in range(3):
            state, _ = trainer.step(state)
        thetas.append(state.theta)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), *thetas)
