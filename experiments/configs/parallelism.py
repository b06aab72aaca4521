"""Config for `python -m experiments.parallelism` (data / tensor / async / pipeline parallelism).

    python -m experiments.parallelism --config experiments/configs/parallelism.py \
        --workdir workdirs/parallelism_dp --config.mode=dp
    ... --config.mode=tp | async | pp

Simulated CPU devices (`num_cpu_devices`) stand in for accelerators; on them step times show
the overhead of each form, not a speedup. Equivalence and communication bytes are exact anywhere.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.mode = "dp"  # dp | tp | async | pp
    config.seed = 0
    config.num_cpu_devices = 8  # used only on the CPU platform, set before JAX starts
    config.backends = ("local",)
    config.timing_repeats = 10  # median over this many steps after the compiling one

    # Data parallelism: a task of the zoo, every DP form against the single-device step.
    config.dp = ml_collections.ConfigDict()
    config.dp.task = "digits_mlp"
    config.dp.batch_size = 128
    config.dp.num_steps = 5  # steps compared against the reference
    config.dp.optimizers = ("adam", "mlp_lopt")
    config.dp.learning_rate = 1e-3

    # Tensor parallelism: the pure-function LM of models.functional_lm on data x model meshes.
    config.tp = ml_collections.ConfigDict()
    config.tp.meshes = ((8, 1), (4, 2), (2, 4), (1, 8))  # (data, model)
    config.tp.vocab = 128
    config.tp.dim = 64
    config.tp.num_heads = 8
    config.tp.head_dim = 8
    config.tp.hidden = 256
    config.tp.num_layers = 2
    config.tp.seq_len = 32
    config.tp.batch_size = 16
    config.tp.num_steps = 3
    config.tp.learning_rate = 1e-3
    # The task zoo's flax Transformer on the same meshes (annotations chosen by param path).
    config.tp.zoo_task = ml_collections.ConfigDict(
        {"seq_len": 32, "d_model": 64, "num_heads": 8, "num_layers": 2, "batch_size": 16}
    )
    config.tp.zoo_learning_rate = 0.5

    # Asynchronous SGD: sync vs async at several worker counts vs sync with a straggler.
    config.async_sgd = ml_collections.ConfigDict()
    config.async_sgd.task = "digits_mlp"
    config.async_sgd.worker_batch_size = 16
    config.async_sgd.learning_rate = 0.1
    config.async_sgd.num_workers = (2, 4, 8, 16)  # async staleness grows with the worker count
    config.async_sgd.sync_workers = 8  # sync SGD (and sync with a straggler) uses this many
    config.async_sgd.straggler_slowdown = 4.0  # one worker this many times slower
    config.async_sgd.jitter = 0.2  # log-normal spread of every compute time
    config.async_sgd.wall_clock_budget = 60.0  # simulated seconds (1 = one mean gradient)
    config.async_sgd.fixed_staleness = (0, 2, 8, 32)  # loss-vs-updates curves at fixed staleness
    config.async_sgd.fixed_updates = 400

    # Pipeline parallelism: overrides of experiments/configs/pipeline_bench.py.
    config.pp = ml_collections.ConfigDict()
    return config
