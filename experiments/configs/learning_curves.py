"""Config for `python -m experiments.learning_curves` (curves over data and step budget).

    python -m experiments.learning_curves --config experiments/configs/learning_curves.py \
        --workdir DIR [--config.benchmark_results=BENCH_DIR/results.json]
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.task = "digits_mlp"
    config.task_kwargs = {"batch_size": 64}
    config.size_key = "hidden"  # the task option that sets the model size
    config.sizes = ("16", "64")  # '64' -> hidden=(64,), '64x64' -> (64, 64)
    config.optimizers = "adam,mlp_digits_mlp"  # "adam", shipped names, or "all"
    config.protocol = "generalization"  # or "optimization"
    config.num_steps = 400  # steps of every data-curve point
    config.fractions = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0)
    config.subset_seed = 0  # the permutation whose first rows make each subset (nested)
    config.budgets = (50, 100, 200, 400)  # step budgets, each its own tuned run (full data)
    config.budget_sizes = ("64",)  # sizes that get a budget curve
    config.lr_decades = 2.0
    config.tuning_grid_points = 4
    config.tuning_seeds = (0, 1)
    config.seeds = (100, 101, 102)  # final seeds of every point
    config.num_resamples = 1000  # bootstrap resamples of the crossing intervals
    config.benchmark_results = ""  # a benchmark workdir's results.json for the Pareto plots
    config.seed = 0
    config.backends = ("local",)
    return config
