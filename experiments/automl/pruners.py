"""Pruners by name: stop poor trials early from their intermediate validation losses.

    pruner = make_pruner("median", warmup_steps=1)       # below-median trials stop
    pruner = make_pruner("successive_halving")           # asynchronous successive halving
    pruner = make_pruner("hyperband", max_resource=4)    # Hyperband over SH brackets
    PRUNERS   # ("none", "median", "successive_halving", "hyperband")

An objective reports `(step, value)` pairs through the `report` callback the study hands it
(`experiments.automl.study`); a pruned trial ends as PRUNED with its last reported value, and
counts against the trial budget like any finished trial. Steps are the objective's own
resource unit (evaluation index, training step, outer meta-step).
"""

from __future__ import annotations

import optuna

PRUNERS = ("none", "median", "successive_halving", "hyperband")


def make_pruner(
    name: str,
    *,
    startup_trials: int = 3,
    warmup_steps: int = 0,
    min_resource: int = 1,
    max_resource: int | str = "auto",
    reduction_factor: int = 3,
) -> optuna.pruners.BasePruner:
    """The Optuna pruner called `name`.

    Args:
      name: one of PRUNERS.
      startup_trials: (median) trials that always run to the end before any is pruned.
      warmup_steps: (median) reported steps before a trial may be pruned.
      min_resource, reduction_factor: (successive halving, hyperband) the first rung's
        resource and the fraction 1/reduction_factor of trials promoted at each rung.
      max_resource: (hyperband) the largest step a trial reports ("auto": the first finished
        trial's last step).

    Raises:
      ValueError: an unknown name (lists PRUNERS) or a non-positive resource.
    """
    if min_resource < 1 or reduction_factor < 2:
        raise ValueError(f"need min_resource >= 1 and reduction_factor >= 2, got "
                         f"{min_resource}, {reduction_factor}")
    if name == "none":
        return optuna.pruners.NopPruner()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=startup_trials,
                                           n_warmup_steps=warmup_steps)
    if name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=min_resource,
                                                      reduction_factor=reduction_factor)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=min_resource,
                                              max_resource=max_resource,
                                              reduction_factor=reduction_factor)
    raise ValueError(f"unknown pruner {name!r}; valid pruners: {PRUNERS}")
