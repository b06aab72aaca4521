"""NormMLPLOpt (norm_mlp) meta-trained on a mixture with CNNs: the recipe of `norm_mlp_mix`
(PES, reparameterisation augmentation over [1e-3, 1e3], horizons log-uniform in [100, 2000],
truncations of 20 steps, outer Adam at 1e-3) over 8 shape groups from four families: 2
meta_train groups each of digits_mlp, mnist1d_mlp, digits_cnn (2-D CNNs on 8x8 digits) and
quadratic. The population is sharded over 2 CPU devices (one per core of the dev box); theta
snapshots every 50 outer steps are scored on the OOD selection set
(experiments/configs/meta_select.py) to pick the shipped checkpoint.

    python -m experiments.meta_train --config experiments/configs/meta_norm_mix_cnn.py \
        --workdir workdirs/norm_mix_cnn
"""

from experiments.configs import meta_norm_mlp


def get_config():
    c = meta_norm_mlp.get_config()
    c.name = "norm_mix_cnn"
    c.family = "digits_mlp,mnist1d_mlp,digits_cnn,quadratic"
    c.num_groups = 2
    c.outer_steps = 600
    c.cpu_devices = 2
    return c
