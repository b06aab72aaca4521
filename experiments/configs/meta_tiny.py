"""A seconds-long meta-training run (tests and smoke checks): LearnedAdam, TBPTT, quadratics."""

from experiments.configs import meta_base


def get_config():
    c = meta_base.get_config()
    c.lopt = "learned_adam"
    c.family = "quadratic"
    c.estimator = "tbptt"
    c.num_tasks = 8
    c.unroll_length = 5
    c.truncation = "constant"
    c.min_horizon, c.max_horizon = 10, 20
    c.outer_lr = 3e-2
    c.outer_steps = 20
    c.checkpoint_every = 5
    c.log_every = 5
    return c
