"""NormMLPLOpt (norm_mlp) meta-trained for generalisation: the recipe of `norm_mlp_mix`.

PES over a mixture of 6 shape groups from three families (2 meta_train groups each of
digits_mlp, mnist1d_mlp and quadratic: widths, depths, activations and batch sizes vary),
reparameterisation augmentation (parameters rescaled by a log-uniform factor in [1e-3, 1e3],
loss unchanged: models.augment), unroll horizons log-uniform in [100, 2000], truncations of
20 steps, outer Adam at 1e-3; theta snapshots every 50 outer steps for checkpoint selection
on the OOD selection set (experiments/configs/meta_select.py).

    python -m experiments.meta_train --config experiments/configs/meta_norm_mlp.py \
        --workdir workdirs/norm_mlp_mix
Ablations (reduced budget, --config.outer_steps=...): --config.lopt_kwargs.orthogonalize=False,
--config.lopt_kwargs.normalize_output=False, --config.reparam_log10_range=0.
"""

import ml_collections

from experiments.configs import meta_base


def get_config():
    c = meta_base.pes_recipe("norm_mlp", "digits_mlp,mnist1d_mlp,quadratic")
    c.name = "norm_mlp_mix"
    c.lopt_kwargs = ml_collections.ConfigDict({"orthogonalize": True, "normalize_output": True,
                                               "adamw_for_vectors": False})
    c.num_groups = 2
    c.reparam_log10_range = 3.0
    c.min_horizon, c.max_horizon = 100, 2000
    c.unroll_length = 20
    c.num_tasks = 8
    c.outer_lr = 1e-3
    c.outer_steps = 2000
    c.checkpoint_every = 50
    c.snapshot_every = 50
    c.log_every = 10
    return c
