"""Quick benchmark (`make benchmark`): a few small tasks, tuned baselines, learned optimizers.

Budgeted to finish, tuning included, in well under 15 minutes on an idle 2-core CPU machine:
3 small tasks (a held-out digits MLP, a held-out mnist1d MLP, out-of-distribution logistic
regression) x (4 baselines tuned over 7-point learning-rate grids, AdamW 7 x 2 with weight decay,
3 tuning seeds) + final runs on 3 fresh seeds, 400 steps each. Compilation dominates on CPU: one
compiled run per (task, optimizer) serves both tuning and the final runs, which is why the tuning
seeds are as many as the final seeds.

    python -m experiments.benchmark --config experiments/configs/benchmark_quick.py \
        --workdir workdirs/benchmark [--config.num_steps=200 ...]
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    # Suite (experiments.benchmarking.suite): named tasks, held-out tasks of families, OOD suite.
    config.tasks = ""
    config.task_overrides = ml_collections.ConfigDict()
    config.heldout_families = "digits_mlp,mnist1d_mlp"
    config.num_heldout = 1
    config.heldout_seed = 0
    config.ood = True
    config.ood_names = "logistic"  # empty: the whole models.ood_suite()
    # Optimizers: tuned baselines and learned ones (never tuned): 'pretrained:NAME',
    # 'checkpoint:PATH' or 'default:ARCH' (untrained default theta, labelled so).
    config.baselines = "sgd,nesterov,adam,adamw"
    config.learned = (
        "pretrained:mlp_digits_mlp,pretrained:adafac_mlp_mnist1d_mlp,pretrained:adafac_mlp_mixed_valid")
    config.lopt_init_seed = 0
    # Budget and evaluation.
    config.num_steps = 400
    config.eval_every = 50
    config.eval_batches = 2
    config.full_split_eval = True
    config.seeds = (100, 101, 102)  # final runs; disjoint from the tuning seeds
    config.smoothing_window = 20
    config.curve_stride = 5
    # Tuning on the validation split (experiments.benchmarking.tuning).
    config.tuning = ml_collections.ConfigDict()
    config.tuning.sampler = "grid"  # grid | random | tpe
    config.tuning.grid_points = 7
    config.tuning.weight_decay_points = 2
    config.tuning.num_trials = 8  # random / tpe only
    config.tuning.seeds = (0, 1, 2)  # as many as config.seeds: shares the compiled run
    config.tuning.last_k = 2
    config.tuning.sampler_seed = 0
    config.tuning.reuse_from = ""  # a benchmark workdir (or optuna.db) whose tuning to start from
    config.backends = ("local",)
    return config
