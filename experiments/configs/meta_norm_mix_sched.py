"""NormMLPLOpt meta-trained the way it is run: the `meta_norm_mix_cnn` recipe (8 groups of
digits / mnist1d MLPs, digits CNNs and quadratics; PES; reparameterisation augmentation;
horizons log-uniform in [100, 2000]) with the inner learning rate of every trajectory on a
warmup-cosine over its own horizon (peak = the nominal step size 3e-3), as the benchmark runs a
tuned optimizer over its budget. Checkpoints selected on the OOD selection set under the same
schedule, the untrained default among the candidates:

    python -m experiments.meta_train --config experiments/configs/meta_norm_mix_sched.py \
        --workdir workdirs/norm_mix_sched
    python -m experiments.meta_select --config experiments/configs/meta_select.py \
        --workdir workdirs/norm_mix_sched_select --config.run=workdirs/norm_mix_sched \
        --config.schedule=warmup_cosine --config.include_untrained=True
"""

from experiments.configs import meta_norm_mix_cnn


def get_config():
    c = meta_norm_mix_cnn.get_config()
    c.name = "norm_mix_sched"
    c.inner_schedule = "warmup_cosine"
    return c
