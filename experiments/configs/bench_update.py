"""`python -m experiments.bench_update`: optimizer update cost and full train steps, x Adam."""

import ml_collections

import learned_opt as lo


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.sizes = (1_000_000, 10_000_000)  # parameter counts of the three-layer stacks
    config.optimizers = ("adam", "sgd", "muon", *lo.list_lopts())
    config.repeats = 15                      # timed rounds (medians reported)
    config.num_steps = 1000                  # horizon given to optimizers that need one
    config.train_step = True                 # also time full train steps of ~10M-param models
    config.train_batches = (128, 512, 2048)  # batch sweep of the MLP classifier
    config.train_widths = (1024, 2048, 2048, 2048, 10)
    config.train_transformer = True          # the zoo's Transformer LM at config.transformer
    # nanoGPT's shakespeare-char model shape (10.7M params, character vocabulary), at 16 x 128
    # tokens per step (nanoGPT trains it on 64 x 256; 2048 tokens keeps a step ~1 s on 2 cores).
    config.transformer = ml_collections.ConfigDict(dict(
        seq_len=128, d_model=384, num_heads=6, num_layers=6, batch_size=16))
    config.seed = 0
    return config
