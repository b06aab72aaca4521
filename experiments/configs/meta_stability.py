"""Long-horizon stability check (experiments.meta_stability): 20k steps of a digits MLP,
10x the longest meta-training horizon (2000) of norm_mlp_mix.

    python -m experiments.meta_stability --config experiments/configs/meta_stability.py \
        --workdir workdirs/norm_mlp_stability --config.pretrained=norm_mlp_mix
"""

import ml_collections


def get_config():
    c = ml_collections.ConfigDict()
    c.pretrained = "norm_mlp_mix"     # shipped name or card path
    c.learning_rate = 0.0             # 0: the card's default learning_rate
    c.schedule = "constant"           # constant | warmup_cosine (peak learning_rate, to 0)
    c.warmup_fraction = 0.05
    c.task = "digits_mlp"
    c.task_kwargs = ml_collections.ConfigDict({"hidden": (64,), "batch_size": 64})
    c.num_steps = 20000
    c.num_seeds = 2
    c.log_every = 200                 # smoothing window of the reported curve
    c.blowup_factor = 3.0
    c.floor_fraction = 1e-3           # running minimum floored at this x the initial loss
    return c
