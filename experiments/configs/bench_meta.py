"""`python -m experiments.bench_meta`: meta-training throughput."""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.setups = ("regression", "digits")
    c.lopts = ("mlp", "adafac_mlp", "hyper")
    # Hyperparameters given to every lopt above (what part of an update costs), e.g.
    # --config.lopt_kwargs=hidden_size=4,orthogonalize=False; rows measured with any get no
    # ratio to the reference.
    c.lopt_kwargs = ""
    c.estimators = ("pes", "tbptt")
    c.steps = 30              # timed rounds (medians reported)
    c.num_tasks = 8
    c.unroll_length = 20
    c.min_horizon, c.max_horizon = 100, 1000
    c.num_devices = 1         # population mesh over this many devices
    c.breakdown = True        # also time the parts of an outer step
    c.remat = True            # TBPTT: checkpoint every inner step (TruncatedUnroller.remat)
    # lo_reference_results.json of ../shared/reference/bench_lo.py, run on this machine right
    # before or after: rows of the standard setup get their ratio to its faster mode.
    c.reference = ""
    return c
