"""Meta-training: truncated unrolls of a task population, TBPTT / ES / PES meta-gradients,
an optax outer loop, sharding over devices and processes, and resumable checkpoints.

    from learned_opt import meta
    unroller = meta.TruncatedUnroller(family, group, lopt, unroll_length=20,
                                      schedule=meta.ConstantSchedule(200))
    trainer = meta.MetaTrainer(unroller, meta.get_estimator("pes"), num_tasks=8)
    state = trainer.init(jax.random.key(0), lopt.init(jax.random.key(1)))
    state, metrics = trainer.step(state)
    score = meta.evaluate(unroller, state.theta, fixed_population)["meta_loss"]  # forward only

Several shape groups (or task families) train one theta together when the trainer gets one
unroller per group (a `meta.Mixture`, or a list of unrollers); each group is its own vmapped
sub-population of `num_tasks` tasks:

    trainer = meta.MetaTrainer([meta.TruncatedUnroller(family, g, lopt, unroll_length=20,
                                                       schedule=schedule) for g in groups],
                               meta.get_estimator("pes"), num_tasks=8)
"""

from learned_opt.meta.aggregation import Mixture, evaluate, meta_grad
from learned_opt.meta.estimators import ES, PES, TBPTT, get_estimator
from learned_opt.meta.objectives import MetaObjective
from learned_opt.meta.population import TaskState, TruncatedUnroller
from learned_opt.meta.sharding import population_mesh, sharded_meta_grad
from learned_opt.meta.trainer import MetaTrainer, MetaTrainState, default_outer_tx
from learned_opt.meta.truncation import ConstantSchedule, LogUniformSchedule, get_schedule

__all__ = [
    "ES",
    "PES",
    "TBPTT",
    "ConstantSchedule",
    "LogUniformSchedule",
    "MetaObjective",
    "MetaTrainState",
    "MetaTrainer",
    "Mixture",
    "TaskState",
    "TruncatedUnroller",
    "default_outer_tx",
    "evaluate",
    "get_estimator",
    "get_schedule",
    "meta_grad",
    "population_mesh",
    "sharded_meta_grad",
]
