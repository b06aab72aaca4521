"""Every key `experiments.nas` understands, with defaults: MLPs on digits and mnist1d.

    python -m experiments.nas --config experiments/configs/nas.py --workdir DIR \
        --config.family=cnn --config.estimator=extrapolation
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.family = "mlp"               # mlp | cnn (digits, mnist1d) | transformer (text)
    c.datasets = ("digits", "mnist1d")
    c.space = ml_collections.ConfigDict(dict(     # experiments.automl.nas_space.search_space
        max_layers=3, widths=(16, 32, 64, 128), activations=("relu", "tanh", "gelu"),
        channels=(8, 16, 32), kernel_sizes=(3, 5), heads=(1, 2, 4), model_widths=(32, 64, 128)))
    c.strategies = ("random", "evolution", "tpe")
    c.num_trials = 32              # per strategy and seed: the equal budget
    c.search_seeds = (0, 1, 2)
    c.population_size = 8          # regularised evolution
    c.tournament_size = 3
    c.startup_trials = 8           # tpe
    c.estimator = "low_fidelity"   # low_fidelity | extrapolation
    c.search_steps = 200           # training steps per candidate
    c.search_eval_every = 25
    c.search_train_seeds = (0,)
    c.learning_rate = 3e-3         # Adam, for candidates and final runs alike
    c.batch_size = 64
    c.final_steps = 2000           # final runs of the found and the default architecture
    c.final_eval_every = 500       # (extrapolation's target step)
    c.final_seeds = (10, 11, 12)
    c.storage = "sqlite"
    c.progress = True
    c.backends = ("local",)
    return c
