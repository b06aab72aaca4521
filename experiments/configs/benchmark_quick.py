"""Quick benchmark (`make benchmark`): both protocols, a few small tasks, tuned and tuning-free
baselines, the shipped learned optimizers.

Budgeted to about 3 minutes, tuning included, on an idle 2-core CPU machine: 3 small tasks (a
held-out digits MLP, a held-out mnist1d MLP, out-of-distribution logistic regression) x (5
baselines tuned over 7-point learning-rate grids, AdamW 7 x 2 with weight decay, 3 tuning
seeds; Adam(1e-3) and 4 tuning-free optax.contrib optimizers; 4 learned optimizers at their
default and tuned over 7-point grids relative to it) + final runs on 3 fresh seeds, 400 steps
each. Compilation dominates on CPU: one compiled run per
(task, optimizer) serves both tuning and the final runs, which is why the tuning seeds are as
many as the final seeds; the two protocols share the trials.

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
    # Protocols (experiments.benchmarking.spec): optimization | generalization | both.
    config.protocol = "both"
    # Tuned track (reference: tuned Adam; experiments.benchmarking.baselines): sgd, nesterov,
    # adam, adamw, muon, with a learning-rate schedule: warmup_cosine | constant.
    config.baselines = "sgd,nesterov,adam,adamw,muon"
    config.schedule = "warmup_cosine"
    config.warmup_fraction = 0.05
    config.end_fraction = 0.0
    # Self-tuning track (0 trials, reference Adam(1e-3)): tuning-free optax.contrib optimizers
    # at their defaults: schedule_free_adamw, prodigy, dog, dowg, dadapt_adamw.
    config.tuning_free = "schedule_free_adamw,prodigy,dog,dadapt_adamw"
    # Learned optimizers: 'pretrained:NAME', 'checkpoint:PATH' or 'default:ARCH' (untrained
    # default theta, labelled so). Each runs at its default (self-tuning track) and, if it takes
    # a learning rate, tuned on a grid relative to its default (learned_tuning: auto | relative
    # | none; the grid spans default x 10^(+-learned_grid_decades / 2), grid_points rates).
    config.learned = (
        "pretrained:norm_mlp_mix,pretrained:mlp_digits_mlp,pretrained:adafac_mlp_mnist1d_mlp,"
        "pretrained:adafac_mlp_mixed_valid")
    config.learned_tuning = "auto"
    config.learned_grid_decades = 3.0  # x0.03 .. x30 of the default, as wide as Adam's
    # The tuned learned entries' schedule: "same" (the tuned baselines' schedule above, the
    # tuned rate as its peak: equal treatment) | "constant". At the default (self-tuning): the
    # default rate, constant, or on the optimizer's own default schedule if it has one
    # (NormMLPLOpt: warmup + cosine over num_steps).
    config.learned_schedule = "same"
    config.lopt_init_seed = 0
    # Budget and evaluation.
    config.num_steps = 400
    config.eval_every = 50
    config.eval_batches = 2
    config.full_split_eval = True
    config.seeds = (100, 101, 102)  # final runs; disjoint from the tuning seeds
    config.smoothing_window = 20
    config.curve_stride = 5
    # Aggregates: 95% percentile-bootstrap intervals over tasks x seeds.
    config.bootstrap_resamples = 2000
    config.bootstrap_seed = 0
    # Tuning (experiments.benchmarking.tuning): one set of trials, a winner per protocol
    # (optimization: final smoothed train loss; generalization: mean of the last last_k valid
    # losses).
    config.tuning = ml_collections.ConfigDict()
    config.tuning.sampler = "grid"  # grid | random | tpe
    config.tuning.grid_points = 7
    config.tuning.weight_decay_points = 2
    config.tuning.num_trials = 8  # random / tpe only
    config.tuning.seeds = (0, 1, 2)  # as many as config.seeds: shares the compiled run
    config.tuning.last_k = 2
    config.tuning.sampler_seed = 0
    config.tuning.reuse_from = ""  # a benchmark workdir (or optuna.db) whose tuning to start from
    # Offline evaluation (experiments.benchmarking.offline_eval): the first final seed's model
    # of every run on a classification task saves valid/test predictions into
    # <workdir>/evaluation; results.json gains test F1, ECE before / after temperature scaling
    # and per-class accuracy; the report a "Calibration and slices" section.
    config.predictions = True
    config.prediction_sample_rows = 64
    config.evaluation_resamples = 200
    config.backends = ("local",)
    return config
