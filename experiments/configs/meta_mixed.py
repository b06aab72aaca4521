"""MLPLOpt meta-trained with PES on a mixture of shape groups from two families at once.

Two meta_train groups of digits_mlp and two of mnist1d_mlp (drawn from the seed), each a
vmapped sub-population of `num_tasks` tasks; the meta-gradient averages over all 4 groups.

    python -m experiments.meta_train --config experiments/configs/meta_mixed.py \
        --workdir workdirs/mixed_mlp [--config.num_groups=-1 --config.outer_steps=4000]
"""

from experiments.configs import meta_base


def get_config():
    c = meta_base.pes_recipe("mlp", "digits_mlp,mnist1d_mlp")
    c.num_groups = 2
    return c
