"""A few PES meta-steps on the toy family, shared by the device/process equivalence tests."""

import jax
from toy import QuadraticFamily

import learned_opt as lo
from learned_opt import meta
from parallel.distributed import fetch_replicated

NUM_TASKS = 8


def run_toy_meta_steps(devices, steps=2):
    """(theta after `steps` PES outer steps, grad norm of each step) on a mesh of `devices`."""
    family = QuadraticFamily(dim=4, noise=0.1)
    lopt = lo.LearnedAdam(learning_rate=0.05)
    unroller = meta.TruncatedUnroller(family, (4,), lopt, unroll_length=3,
                                      schedule=meta.ConstantSchedule(6))
    trainer = meta.MetaTrainer(unroller, meta.PES(sigma=0.05), num_tasks=NUM_TASKS,
                               mesh=meta.population_mesh(devices),
                               outer_tx=meta.default_outer_tx(0.01))
    state = trainer.init(jax.random.key(0), lopt.init(jax.random.key(0)))
    grad_norms = []
    for _ in range(steps):
        state, metrics = trainer.step(state)
        grad_norms.append(float(fetch_replicated(metrics["grad_norm"])))
    return state.theta, grad_norms
