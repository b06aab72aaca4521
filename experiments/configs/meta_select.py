"""Checkpoint selection for a meta-training run (experiments.meta_select).

The selection set is the held-out subset of regression_mlp (gelu / wider / deeper MLPs on a
synthetic tanh-teacher regression, init scales and data from the held-out ranges): no family
of the norm_mlp meta-training mixture (digits_mlp, mnist1d_mlp, quadratic) and no task of the
benchmark suites (held-out digits_mlp / mnist1d_mlp tasks and models.ood_suite()).

    python -m experiments.meta_select --config experiments/configs/meta_select.py \
        --workdir workdirs/norm_mlp_select --config.run=workdirs/norm_mlp_mix
"""

import ml_collections


def get_config():
    c = ml_collections.ConfigDict()
    c.run = ""                          # the meta-training workdir (with snapshots/)
    c.selection_family = "regression_mlp"
    c.num_tasks = 3
    c.task_seed = 7
    c.num_seeds = 2
    c.num_steps = 1000
    c.window = 50                       # final loss = mean of the last `window` train losses
    c.learning_rates = "1e-3,3e-3,1e-2"  # the middle one scores the snapshots
    c.stride = 1                        # score every stride-th snapshot (counted from the last)
    c.schedule = "constant"             # constant | warmup_cosine (the lr is its peak), for
    c.warmup_fraction = 0.05            # every run, Adam's included
    c.include_untrained = False         # also score lopt.init(key(untrained_seed))
    c.untrained_seed = 0
    return c
