"""Full benchmark: held-out tasks of every meta-training family plus the out-of-distribution suite.

Hours on a 2-core CPU; minutes on a GPU.

    python -m experiments.benchmark --config experiments/configs/benchmark_full.py \
        --workdir workdirs/benchmark_full --config.learned=pretrained:NAME,...
"""

from experiments.configs import benchmark_quick


def get_config():
    config = benchmark_quick.get_config()
    config.tasks = "digits_mlp,mnist1d_mlp,quadratic"
    config.heldout_families = "digits_mlp,mnist1d_mlp,quadratic"
    config.num_heldout = 4
    config.ood = True
    config.ood_names = ""  # the whole suite
    config.learned = "default:learned_adam,default:mlp,default:adafac_mlp"
    config.num_steps = 2000
    config.eval_every = 100
    config.seeds = (100, 101, 102, 103, 104)
    config.tuning.grid_points = 10  # learning rates: ~3 points per decade
    config.tuning.weight_decay_points = 3
    config.tuning.seeds = (0, 1, 2, 3, 4)  # as many as the final seeds: one compile per run
    config.tuning.last_k = 3
    return config
