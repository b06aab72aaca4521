"""Tuning meta-training: outer learning rate, PES sigma and truncation (unroll) length, scored
by the validation meta-loss of fixed tasks after a short meta-training run per trial.

    python -m experiments.hpo --config experiments/configs/hpo_meta.py --workdir DIR \
        [--config.num_trials=32 --config.meta.outer_steps=200 --config.pruner=median]

The defaults are tiny on purpose (LearnedAdam on the quadratic family, 4 tasks, 6 outer steps):
a 2-trial smoke run takes seconds. For a real study use e.g. --config.meta.base.lopt=mlp
--config.meta.base.family=digits_mlp --config.meta.outer_steps=300 --config.num_trials=32.
"""

import ml_collections

from experiments.configs import hpo, meta_base


def get_config() -> ml_collections.ConfigDict:
    c = hpo.get_config()
    c.objective = "meta"
    c.task = "meta_training"
    c.optimizer = "meta"
    c.space = ml_collections.ConfigDict({
        "outer_lr": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True},
        "sigma": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True},
        "unroll_length": {"type": "categorical", "choices": (5, 10)},
    })
    c.sampler = "tpe"
    c.startup_trials = 4
    c.num_trials = 16
    base = meta_base.get_config()
    base.lopt = "learned_adam"
    base.family = "quadratic"
    base.estimator = "pes"
    base.num_tasks = 4
    base.truncation = "constant"
    base.min_horizon, base.max_horizon = 10, 20
    base.unroll_length = 5
    base.group_index = 0
    for key in ("name", "num_groups", "objective_split", "outer_steps", "init_from",
                "checkpoint_every", "log_every", "backends"):
        del base[key]  # not meta-training hyperparameters of one trial
    c.meta = ml_collections.ConfigDict(dict(
        base=base,
        outer_steps=6,             # meta-training steps per trial
        eval_every=3,              # outer steps between validation meta-loss reports
        num_eval_tasks=4,          # fixed tasks of the validation meta-loss
    ))
    return c
