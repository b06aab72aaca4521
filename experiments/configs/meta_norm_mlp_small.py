"""The norm_mlp recipe at a reduced budget, for ablations (one table: selection-set scores).

One meta_train group of digits_mlp, 4 tasks, 80 outer steps (what a shared 2-core CPU allowed
beside the main run: these runs are short and noisy); otherwise as
experiments/configs/meta_norm_mlp.py. Variants:

    python -m experiments.meta_train --config experiments/configs/meta_norm_mlp_small.py \
        --workdir workdirs/abl_full
    ... --workdir workdirs/abl_no_orth --config.lopt_kwargs.orthogonalize=False
    ... --workdir workdirs/abl_no_norm --config.lopt_kwargs.normalize_output=False
    ... --workdir workdirs/abl_no_aug --config.reparam_log10_range=0.0
    python -m experiments.meta_select --config experiments/configs/meta_select.py \
        --workdir workdirs/abl_full_select --config.run=workdirs/abl_full
"""

from experiments.configs import meta_norm_mlp


def get_config():
    c = meta_norm_mlp.get_config()
    c.name = "norm_mlp_small"
    c.family = "digits_mlp"
    c.num_groups = 1
    c.group_index = 0
    c.num_tasks = 4
    c.outer_steps = 80
    c.checkpoint_every = 50
    c.snapshot_every = 0
    return c
