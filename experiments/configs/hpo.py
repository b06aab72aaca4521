"""Every key `experiments.hpo` understands, with defaults: Adam's learning rate on digits_mlp.

    python -m experiments.hpo --config experiments/configs/hpo.py --workdir DIR \
        --config.sampler=coarse_to_fine --config.num_trials=24 --config.pruner=median

`space` is declarative (experiments.automl.space.SearchSpace.from_dict): per parameter a dict
with "type" (float | int | categorical) and its fields (low, high, log, grid, step, choices,
when={"parent": [values]} for a conditional parameter).
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.objective = "training"       # training (an optax optimizer on a task) | meta
    c.task = "digits_mlp"          # models.list_tasks()
    c.task_kwargs = ml_collections.ConfigDict()
    c.optimizer = "adam"           # any optax optimizer name; a categorical "optimizer" in
                                   # the space overrides it per trial
    c.fixed = ml_collections.ConfigDict()     # hyperparameters given to every trial
    c.space = ml_collections.ConfigDict({
        "learning_rate": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
    })
    c.sampler = "tpe"              # grid | random | tpe | cmaes | evolution | coarse_to_fine
    c.sampler_seed = 0
    c.grid_points = 6              # grid: values per float parameter
    c.startup_trials = 8           # tpe / cmaes: random trials first
    c.fine_sampler = "tpe"         # coarse_to_fine: second stage (tpe | grid | random | cmaes)
    c.coarse_fraction = 0.5        # coarse_to_fine: share of the trials spent on random search
    c.narrow_factor = 0.25         # coarse_to_fine: narrowed range width / original (log scale)
    c.pruner = "none"              # none | median | successive_halving | hyperband
    c.rungs = (1.0,)               # fractions of num_steps between pruning decisions, e.g.
                                   # (0.25, 0.5, 1.0) with a pruner (each rung retrains)
    c.prune_startup = 3            # median: trials never pruned
    c.prune_reduction = 3          # successive halving / hyperband reduction factor
    c.num_trials = 24
    c.timeout_s = 0.0              # wall-time cap per call; 0: none
    c.storage = "sqlite"           # sqlite (workdir/optuna.db) | journal (parallel) | memory
    c.num_steps = 300
    c.eval_every = 50
    c.eval_batches = 2
    c.full_split_eval = True
    c.seeds = (0, 1)               # training seeds averaged per trial
    c.last_k = 2                   # validation evaluations averaged per seed
    c.compare = ml_collections.ConfigDict(dict(
        enabled=False,             # the "tuned Adam with N trials vs learned optimizers" study
        budgets=(1, 2, 4, 8, 16, 32, 64),
        sampler="random",          # the budget curve's search (one study per search seed)
        search_seeds=(0, 1, 2),
        final_seeds=(10, 11, 12),  # seeds of the final valid / test runs
        learned_optimizers="all",  # "all" shipped (lo.list_pretrained()) or "name1,name2"
        learned_trials=(4,),       # learned optimizers also after N trials over their lr
        learned_lr_decades=2.0,    # ... on card lr x 10^(+-decades / 2), Adam's sampler / seeds
    ))
    c.meta = ml_collections.ConfigDict()      # objective="meta" only: see hpo_meta.py
    c.progress = True
    c.backends = ("local",)
    return c
