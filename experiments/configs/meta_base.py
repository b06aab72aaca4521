"""Every key `experiments.meta_train` understands, with defaults. Other meta_*.py configs
start from this one and override: a key not defined here is a typo and fails at startup.

    python -m experiments.meta_train --config experiments/configs/meta_base.py --workdir DIR \
        --config.estimator=tbptt --config.outer_steps=100
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.name = ""                    # pretrained name of the result; "" -> "<lopt>_<family>"
    c.lopt = "mlp"                 # lo.list_lopts()
    c.lopt_kwargs = ml_collections.ConfigDict()   # architecture hyperparameters
    c.family = "digits_mlp"        # models.list_families(); several: "digits_mlp,mnist1d_mlp"
    c.num_groups = 1               # meta_train groups per family mixed in one run; -1: all
    c.reparam_log10_range = 0.0    # reparameterisation augmentation (models.augment): params
                                   # rescaled by 10**U(-r, r); 0: off
    c.group_index = -1             # one family, num_groups=1: index into family.groups(
                                   # "meta_train"); -1: drawn from seed
    c.estimator = "pes"            # tbptt | es | pes
    c.sigma = 0.01                 # ES / PES perturbation scale
    c.num_tasks = 8                # population size, per group (a multiple of the devices)
    c.unroll_length = 20           # inner steps per outer step
    c.truncation = "log_uniform"   # constant (uses max_horizon) | log_uniform
    c.min_horizon = 100
    c.max_horizon = 1000
    c.inner_schedule = "constant"  # inner learning rate over each trajectory: constant (the
                                   # nominal step size) | warmup_cosine (to 0 at its horizon,
                                   # peak = nominal: how a tuned optimizer is benchmarked)
    c.objective_split = "train"    # train | valid
    c.normalize = "init_loss"      # init_loss | none
    c.loss_clip = 3.0              # cap of a normalized per-step loss
    c.outer_steps = 1000
    c.outer_lr = 1e-3
    c.grad_clip = 1.0              # global-norm clip of the meta-gradient
    c.seed = 0
    c.init_from = ""               # warm start: a pretrained name or card path of the same
                                   # architecture ("" -> lopt.init(seed))
    c.checkpoint_every = 100
    c.snapshot_every = 0           # also save theta (pretrained format) in snapshots/ every
                                   # N outer steps, for checkpoint selection; 0: never
    c.log_every = 10
    c.backends = ("local",)        # experiments.tracking backends
    c.cpu_devices = 0              # on a CPU host: split it into this many JAX devices and
                                   # shard the population over them (2 on the 2-core dev box:
                                   # PES 1.7-1.8x the task-steps/s of 1); 0: JAX's default
    c.compile_cache = "compile_cache"  # JAX persistent compilation cache (parallel.compile_cache)
                                   # a resumed or repeated run loads its compiled steps
                                   # instead of compiling them: a path relative to the
                                   # workdir, or absolute (shared by runs); "": off
    return c


def pes_recipe(lopt: str, family: str) -> ml_collections.ConfigDict:
    """The recipe of the shipped pretrained optimizers: PES, 8 tasks per group, unroll 20,
    log-uniform horizons in [100, 1000], outer Adam at 3e-3, 2000 outer steps by default."""
    c = get_config()
    c.lopt, c.family = lopt, family
    c.estimator = "pes"
    c.num_tasks = 8
    c.unroll_length = 20
    c.min_horizon, c.max_horizon = 100, 1000
    c.outer_lr = 3e-3
    c.outer_steps = 2000
    return c
