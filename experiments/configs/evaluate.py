"""Config for `python -m experiments.evaluate` (offline evaluation of a finished run).

    python -m experiments.evaluate --config experiments/configs/evaluate.py --workdir RUN \
        [--config.n_resamples=2000] [--config.heuristic_task=digits_mlp]

RUN must hold `predictions/<name>.npz` (see `experiments.evaluation.predictions`).
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0  # bootstrap resamples and the slice finder's search / test split
    # Bootstrap intervals on every metric (scipy.stats.bootstrap over examples).
    config.confidence_level = 0.95
    config.n_resamples = 1000
    config.bootstrap_method = "percentile"  # or "basic", "BCa"
    config.num_bins = 15  # calibration bins (equal-width and equal-mass both reported)
    # High-error slice finder: a shallow decision tree, tested on a held-out half (BH-adjusted).
    config.slice_max_depth = 3
    config.slice_min_size = 20
    config.slice_alpha = 0.05
    config.slice_top_k = 5
    config.slice_holdout_fraction = 0.5
    # A scikit-learn baseline on the raw inputs of a models task ("" skips it).
    config.heuristic_task = ""
    config.heuristic_kind = "logistic"  # or "nearest_centroid"
    return config
