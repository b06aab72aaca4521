"""`python -m experiments.report --workdir RUN [--workdir RUN2 ...]`: comparison report."""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.out = ""       # output folder (default: the workdir, or the runs' common parent)
    config.group_by = ""  # dotted config / params key naming a run's group
    config.metrics = ""   # comma-separated metric keys to plot (default: the losses)
    return config
