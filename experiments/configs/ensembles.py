"""Config for `python -m experiments.ensembles` (bagging, boosting, stacking, diversity).

    python -m experiments.ensembles --config experiments/configs/ensembles.py --workdir DIR \
        [--config.optimizers=adam,mlp_digits_mlp] [--config.num_steps=400]
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.task = "digits_mlp"
    config.task_kwargs = {"hidden": (32,), "batch_size": 64}
    config.num_steps = 400
    config.protocol = "generalization"  # tuned on valid loss; "optimization": final train loss
    # "adam", shipped learned optimizer names (lo.list_pretrained()), or "all".
    config.optimizers = "all"
    config.lr_decades = 2.0  # learned optimizers: lr searched this many decades around the card's
    config.tuning_grid_points = 5  # equal grid budget for every optimizer
    config.tuning_seeds = (0, 1)
    config.num_members = 5  # >= 2; seed ensembles, bagging and mixed all use this many
    config.member_seed = 100  # members use seeds member_seed, member_seed + 1, ...
    # Boosting: AdaBoost-SAMME over small MLPs trained by tuned Adam (weighted resampling).
    config.boosting_members = 5
    config.boost_hidden = (8,)
    config.hgb_max_iter = 100  # sklearn HistGradientBoostingClassifier on the raw inputs
    # Stacking: the optimizers' networks on `task`, tuned-Adam networks of these other tasks
    # ("name" or 'name:{"json": "kwargs"}', same dataset), and scikit-learn learners.
    config.stacking_folds = 4  # k + 1 = num_members shares the members' compiled trainer
    config.stacking_tasks = ("digits_cnn",)
    config.stacking_sklearn = ("logistic", "knn", "random_forest")
    config.seed = 0
    config.backends = ("local",)
    return config
