"""The optimizers ensembles and learning curves compare: tuned Adam and shipped learned ones.

Every optimizer is a `benchmarking.tuning.Tunable` over its learning rate, so each gets the same
tuning budget (the benchmark's grid) under one protocol:
  * "adam": `optax.adam(lr)`, lr searched over `ADAM_RANGE`;
  * a shipped learned optimizer NAME: `lo.load_pretrained(NAME)`'s architecture and weights
    with its learning rate searched `lr_decades` decades around the card's default.

    tunables = build_tunables(["adam", "mlp_digits_mlp"], num_steps=400, lr_decades=2.0)
    best = tune_learning_rate(task, tunables[0], spec, workdir=..., study="digits")
"""

from __future__ import annotations

from pathlib import Path

import optax

from experiments.benchmarking import plan as benchmark_plan
from experiments.benchmarking import suite as benchmark_suite
from experiments.benchmarking import tuning

ADAM_RANGE = (1e-4, 1e-1)


def parse_optimizers(text) -> list[str]:
    """'adam,mlp_digits_mlp' / a list / 'all' (adam + every shipped learned optimizer)."""
    import learned_opt as lo

    names = benchmark_suite.parse_names(text) if isinstance(text, str) else list(text)
    shipped = [card["name"] for card in lo.list_pretrained()]
    if names == ["all"]:
        return ["adam", *shipped]
    unknown = [n for n in names if n != "adam" and n not in shipped]
    if unknown or not names:
        raise ValueError(f"unknown optimizers {unknown or names}; valid: 'adam', 'all' or "
                         f"shipped learned optimizers {shipped}")
    return names


def build_tunable(name: str, *, num_steps: int, lr_decades: float = 2.0) -> tuning.Tunable:
    """The Tunable of `name` ('adam' or a shipped learned optimizer)."""
    if name == "adam":
        return tuning.Tunable("adam", lambda h: optax.adam(h["learning_rate"]),
                              {"learning_rate": ADAM_RANGE})
    learned = benchmark_suite.resolve_learned(f"pretrained:{name}", num_steps)
    # The field is being renamed in the benchmark (default_lr -> default_learning_rate).
    default_lr = getattr(learned, "default_learning_rate", getattr(learned, "default_lr", None))
    if default_lr is None:
        raise ValueError(f"learned optimizer {name!r} takes no learning_rate; it cannot be "
                         "tuned at equal budget here")
    theta = learned.tx_args["theta"]
    return tuning.Tunable(
        name, lambda h: learned.make_tx({"theta": theta, "learning_rate": h["learning_rate"]}),
        {"learning_rate": benchmark_plan.relative_range(default_lr, lr_decades)})


def tuning_spec(protocol: str, *, num_steps: int, seeds, grid_points: int,
                eval_every: int | None = None) -> tuning.TuningSpec:
    """The benchmark's TuningSpec for one protocol (full-split validation when it is read).
    Default `eval_every`: the largest divisor of `num_steps` up to a quarter of it (50 -> 10)."""
    eval_every = eval_every or max(d for d in range(1, max(1, num_steps // 4) + 1)
                                   if num_steps % d == 0)
    return tuning.TuningSpec(num_steps=num_steps, eval_every=eval_every, seeds=tuple(seeds),
                             grid_points=grid_points, protocols=(protocol,),
                             smoothing_window=min(20, num_steps), last_k=1,
                             full_split_eval=True)


def tune_learning_rate(task, tunable: tuning.Tunable, spec: tuning.TuningSpec, *, workdir,
                       study: str) -> dict:
    """Tune on `task` (SQLite study in `workdir/optuna.db`, resumable); the winner of the
    spec's protocol: {"learning_rate", "objective", "at_edge", "num_trials", "study"}."""
    storage = f"sqlite:///{Path(workdir).resolve() / 'optuna.db'}"
    result = tuning.tune(task, tunable, spec, storage=storage, study_name=study)
    (protocol,) = spec.protocols
    return {"learning_rate": float(result.best[protocol]["learning_rate"]),
            "objective": result.best_value[protocol], "at_edge": result.at_edge[protocol],
            "num_trials": len(result.trials), "study": result.study_name,
            "protocol": protocol, "objective_name": tuning.OBJECTIVES[protocol]}
