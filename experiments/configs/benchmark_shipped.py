"""The shipped pretrained optimizers against tuned baselines on the issue's two suites.

Held-out tasks of both meta-training families (4 each: `models.heldout_tasks`) and the whole
out-of-distribution suite, 3 final seeds, 1000 steps (the longest meta-training horizon).
These are the figures that the pretrained cards and the README quote. About an hour on an idle
2-core CPU; run the two halves in separate workdirs to get the held-out figures first:

    python -m experiments.benchmark --config experiments/configs/benchmark_shipped.py \
        --workdir workdirs/benchmark_shipped_heldout --config.ood=False
    python -m experiments.benchmark --config experiments/configs/benchmark_shipped.py \
        --workdir workdirs/benchmark_shipped_ood --config.heldout_families=
"""

from experiments.configs import benchmark_quick


def get_config():
    config = benchmark_quick.get_config()
    config.heldout_families = "digits_mlp,mnist1d_mlp"
    config.num_heldout = 4
    config.ood = True
    config.ood_names = ""  # the whole suite
    config.learned = (
        "pretrained:mlp_digits_mlp,pretrained:adafac_mlp_mnist1d_mlp,pretrained:adafac_mlp_mixed_valid")
    config.num_steps = 1000
    config.eval_every = 100
    return config
