"""Config for `python -m experiments.remat_memory` (gradient-checkpointing memory / time).

    python -m experiments.remat_memory --config experiments/configs/remat_memory.py \
        --workdir workdirs/remat_memory [--config.timing_repeats=3]
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.backends = ("local",)
    config.timing_repeats = 7  # median over interleaved repeats (all policies in each round)

    # Deep residual MLP (pre-norm, 4x hidden): one row per (depth, batch size).
    config.mlp = ml_collections.ConfigDict()
    config.mlp.depths = (16, 32)
    config.mlp.batch_sizes = (64, 256)
    config.mlp.width = 128
    config.mlp.policies = (
        "none",
        "dots",
        "dots_no_batch",
        "names:mlp_hidden",
        "full",
    )

    # Causal Transformer LM: one row per (depth, batch size).
    config.transformer = ml_collections.ConfigDict()
    config.transformer.depths = (4, 8)
    config.transformer.batch_sizes = (4, 16)
    config.transformer.d_model = 64
    config.transformer.num_heads = 4
    config.transformer.seq_len = 128
    config.transformer.vocab_size = 256
    config.transformer.policies = (
        "none",
        "dots",
        "dots_no_batch",
        "names:attn_out,mlp_out",
        "full",
    )

    # sqrt(n) scan: compiled temporary memory against depth (no timing).
    config.depth_sweep = ml_collections.ConfigDict()
    config.depth_sweep.depths = (16, 32, 64, 128, 256)
    config.depth_sweep.width = 64
    config.depth_sweep.batch_size = 256
    return config
