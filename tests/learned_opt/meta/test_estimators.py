"""Estimator correctness on a toy quadratic family (tests/learned_opt/meta/toy.py).

TBPTT against central finite differences; ES and PES against the gradient of the
Gaussian-smoothed objective (computed with low variance by averaging TBPTT gradients at
perturbed thetas) within their statistical error; PES summed over the truncations of whole
trajectories against the smoothed full-unroll gradient, with truncated ES measurably biased.
"""

import dataclasses
import functools
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))

from toy import QuadraticFamily  # noqa: E402

import learned_opt as lo  # noqa: E402
from learned_opt import meta  # noqa: E402
from learned_opt.meta import aggregation, estimators  # noqa: E402

FAMILY = QuadraticFamily(dim=4, noise=0.1)
LOPT = lo.LearnedAdam(learning_rate=0.05)
THETA = LOPT.init(jax.random.key(0))
SIGMA = 0.1


def make_unroller(unroll_length, horizon):
    return meta.TruncatedUnroller(
        FAMILY, FAMILY.sample_group(None), LOPT, unroll_length=unroll_length,
        schedule=meta.ConstantSchedule(horizon), objective=meta.MetaObjective(normalize="none",
                                                                               clip=1e6))


def fresh_population(unroller, num_tasks, num_particles, seed=0):
    keys = jax.random.split(jax.random.key(seed), num_tasks)
    return jax.vmap(lambda k: unroller.new_trajectory(k, THETA, num_particles))(keys)


def flat(tree):
    return np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree.leaves(tree)])


def flat_per_task(tree):
    """(num_tasks, num_theta_entries) from a tree whose leaves have a leading task axis."""
    leaves = [np.asarray(x) for x in jax.tree.leaves(tree)]
    return np.concatenate([x.reshape(x.shape[0], -1) for x in leaves], axis=1)


LR = sorted(THETA).index("log_lr")  # dict leaves flatten in sorted key order


def per_task_grads(estimator, unroller, theta, est_state, population):
    out = jax.vmap(lambda e, s: estimator.task_grad(unroller, theta, e, s))(est_state, population)
    return out


def smoothed_gradient(unroller, population, num_samples, seed=1):
    """Mean over tasks and perturbations of the TBPTT gradient at theta + sigma * z."""
    tbptt = meta.TBPTT()
    one = jax.tree.map(lambda x: x[:, :1], population.inner)
    population = population._replace(inner=one)

    @jax.jit
    def grad_at(key):
        eps = estimators._perturbation(THETA, key, SIGMA)
        theta = jax.tree.map(jnp.add, THETA, eps)
        g, *_ = aggregation.meta_grad(tbptt, unroller, theta, tbptt.init(theta, num_tasks(
            population)), population)
        return flat_jnp(g)

    keys = jax.random.split(jax.random.key(seed), num_samples)
    return np.mean([np.asarray(grad_at(k)) for k in keys], axis=0)


def flat_jnp(tree):
    return jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(tree)])


def num_tasks(population):
    return population.step.shape[0]


def test_tbptt_matches_finite_differences():
    unroller = make_unroller(unroll_length=4, horizon=8)
    tbptt = meta.TBPTT()
    population = fresh_population(unroller, 4, 1)
    est_state = tbptt.init(THETA, 4)

    @jax.jit
    def grad_and_value(theta):
        g, _, _, metrics = aggregation.meta_grad(tbptt, unroller, theta, est_state, population)
        return g, metrics["meta_loss"]

    grad, value = grad_and_value(THETA)
    # The forward-only evaluation scores the same objective.
    evaluated = jax.jit(meta.evaluate, static_argnums=0)(unroller, THETA, population)
    np.testing.assert_allclose(evaluated["meta_loss"], value, rtol=1e-6)
    direction = jax.tree.map(lambda x: jnp.ones_like(x), THETA)
    direction["log_eps"] = jnp.zeros(())  # eps barely matters at 1e-8: no signal to compare
    for key in ["log_lr", "log_one_minus_beta1", None]:
        d = direction if key is None else {k: jnp.float32(k == key) for k in THETA}
        h = 1e-2
        plus = grad_and_value(jax.tree.map(lambda t, v: t + h * v, THETA, d))[1]
        minus = grad_and_value(jax.tree.map(lambda t, v: t - h * v, THETA, d))[1]
        fd = float(plus - minus) / (2 * h)
        analytic = float(flat(grad) @ flat(d))
        assert abs(fd) > 1e-4, "finite difference too small to compare"
        np.testing.assert_allclose(analytic, fd, rtol=2e-2, atol=2e-5)



def test_tbptt_remat_changes_memory_not_the_gradient():
    """`TruncatedUnroller.remat` (checkpoint every inner step) is a memory/time trade only."""
    unroller = make_unroller(unroll_length=4, horizon=8)
    population = fresh_population(unroller, 4, 1)
    tbptt = meta.TBPTT()
    grads = []
    for remat in (True, False):
        u = dataclasses.replace(unroller, remat=remat)
        g, _, new_population, _ = jax.jit(functools.partial(aggregation.meta_grad, tbptt, u))(
            THETA, tbptt.init(THETA, 4), population)
        grads.append((flat(g), flat(new_population.inner.params)))
    np.testing.assert_allclose(grads[0][0], grads[1][0], rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(grads[0][1], grads[1][1])

def test_es_and_pes_match_smoothed_gradient():
    # On a trajectory's first segment PES has no accumulated perturbation, so both estimate
    # the gradient of the smoothed segment objective, the same reference for both.
    unroller = make_unroller(unroll_length=5, horizon=10)
    n = 512
    population = fresh_population(unroller, n, 2)
    reference = smoothed_gradient(unroller, population, num_samples=32)
    for name in ["es", "pes"]:
        estimator = meta.get_estimator(name, sigma=SIGMA)
        out = jax.jit(functools.partial(per_task_grads, estimator, unroller))(
            THETA, estimator.init(THETA, n), population)
        contrib = flat_per_task(out.grad)
        mean, stderr = contrib.mean(0), contrib.std(0) / np.sqrt(n)
        assert stderr[LR] < 0.25 * abs(reference[LR]), "test too noisy to tell anything"
        assert np.all(np.abs(mean - reference) < 4 * stderr + 1e-6), (name, mean, reference)


@pytest.mark.slow
def test_pes_over_truncations_matches_full_unroll_and_truncated_es_is_biased():
    k, num_segments, n = 4, 4, 1024
    horizon = k * num_segments
    truncated = make_unroller(unroll_length=k, horizon=horizon)
    full = make_unroller(unroll_length=horizon, horizon=horizon)

    def whole_trajectories(estimator):
        population = fresh_population(truncated, n, 2)
        est_state = estimator.init(THETA, n)
        step = jax.jit(functools.partial(per_task_grads, estimator, truncated))
        total = 0.0
        for _ in range(num_segments):
            out = step(THETA, est_state, population)
            est_state, population = out.est_state, out.task_state
            total = total + flat_per_task(out.grad)
        assert np.all(np.asarray(population.step) == horizon)
        return total / num_segments  # trajectory objective = mean of its segments' objectives

    pes = whole_trajectories(meta.PES(sigma=SIGMA))
    truncated_es = whole_trajectories(meta.ES(sigma=SIGMA))
    reference = smoothed_gradient(full, fresh_population(full, n, 2), num_samples=16)
    lr = LR

    pes_mean, pes_err = pes.mean(0), pes.std(0) / np.sqrt(n)
    assert np.all(np.abs(pes_mean - reference) < 4 * pes_err + 1e-6), (pes_mean, reference)
    es_mean, es_err = truncated_es.mean(0), truncated_es.std(0) / np.sqrt(n)
    assert abs(es_mean[lr] - reference[lr]) > 6 * es_err[lr], (es_mean, reference, es_err)


def test_reset_population_matches_the_vmapped_reset_of_every_task():
    """Building fresh trajectories only for finished tasks changes nothing: same states."""
    unroller = make_unroller(unroll_length=2, horizon=4)
    population = fresh_population(unroller, num_tasks=5, num_particles=2)
    # Tasks 1 and 3 at their horizon, task 4 diverged, the others mid-trajectory.
    population = population._replace(step=jnp.array([0, 4, 2, 4, 2], jnp.int32))
    population = population._replace(inner=population.inner._replace(
        diverged=population.inner.diverged.at[4, 1].set(True)))
    want, want_reset = jax.vmap(lambda s: unroller.reset_finished(THETA, s))(population)
    got, got_reset = jax.jit(unroller.reset_population)(THETA, population)
    np.testing.assert_array_equal(got_reset, [False, True, False, True, True])
    np.testing.assert_array_equal(got_reset, want_reset)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
            a, b = jax.random.key_data(a), jax.random.key_data(b)
        np.testing.assert_array_equal(a, b)
