"""The shipped pretrained optimizers against tuned and tuning-free baselines, both protocols.

Held-out tasks of both meta-training families (4 each: `models.heldout_tasks`) and the whole
out-of-distribution suite, 3 final seeds, 1000 steps (the longest meta-training horizon);
SGD, Nesterov, Adam, AdamW and Muon tuned (warmup + cosine), every tuning-free optax.contrib
baseline, and each learned optimizer at its card's learning rate and tuned on a 7-point grid
relative to it. These are the figures that the pretrained cards and the README quote. Hours
on a shared 2-core CPU: run parts in separate workdirs (e.g. the held-out tasks first) and
combine them with `experiments.card_results`:

    python -m experiments.benchmark --config experiments/configs/benchmark_shipped.py \
        --workdir workdirs/bench17_heldout --config.ood=False
    python -m experiments.benchmark --config experiments/configs/benchmark_shipped.py \
        --workdir workdirs/bench17_ood --config.heldout_families=
"""

from experiments.configs import benchmark_quick


def get_config():
    config = benchmark_quick.get_config()
    config.heldout_families = "digits_mlp,mnist1d_mlp"
    config.num_heldout = 4
    config.ood = True
    config.ood_names = ""  # the whole suite
    config.tuning_free = "schedule_free_adamw,prodigy,dog,dowg,dadapt_adamw"
    config.learned = (
        "pretrained:norm_mlp_mix,pretrained:mlp_digits_mlp,pretrained:adafac_mlp_mnist1d_mlp,"
        "pretrained:adafac_mlp_mixed_valid")
    config.num_steps = 1000
    config.eval_every = 100
    config.evaluation_resamples = 1000
    return config
