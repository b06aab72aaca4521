"""`python -m experiments.bench_tracking`: logging overhead of the trackers."""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.num_steps = 2000
    config.log_every = 10
    config.repeats = 5
    config.batch_size = 128
    config.input_dim = 64
    config.hidden = 256
    config.variants = "local,local+tensorboard,local+tensorboard+mlflow"
    config.seed = 0
    return config
