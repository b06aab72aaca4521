"""AdafacMLPLOpt meta-trained with PES on the mnist1d-MLP family (a shipped-optimizer recipe)."""

from experiments.configs import meta_base


def get_config():
    c = meta_base.get_config()
    c.lopt = "adafac_mlp"
    c.family = "mnist1d_mlp"
    c.estimator = "pes"
    c.num_tasks = 8
    c.unroll_length = 20
    c.min_horizon, c.max_horizon = 100, 1000
    c.outer_lr = 3e-3
    c.outer_steps = 2000
    return c
