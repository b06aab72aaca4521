"""Meta-training throughput: inner task-steps per second (tasks x unroll / outer-step time).

Setups: (a) "regression": the regression-MLP family's 32-32 relu group, batch 64 (the
16-32-32-1 MLP on synthetic data); (b) "digits": the digits-MLP family's first group.
For each learned optimizer and estimator: compile (excluded), then the median wall time of
`--steps` outer steps (each blocked on), 8 tasks x unroll 20 by default.

    python -m experiments.bench_meta --workdir workdirs/bench_meta \
        --lopts=mlp,adafac_mlp,hyper --estimators=pes,tbptt --setups=regression,digits

Writes results.json and one metrics.jsonl row per measurement through experiments.tracking.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax
import numpy as np
from absl import app, flags

import learned_opt as lo
import models
from experiments import tracking
from learned_opt import meta

_WORKDIR = flags.DEFINE_string("workdir", "workdirs/bench_meta", "output directory")
_LOPTS = flags.DEFINE_list("lopts", ["mlp", "adafac_mlp", "hyper"], "learned optimizers")
_ESTIMATORS = flags.DEFINE_list("estimators", ["pes", "tbptt"], "estimators")
_SETUPS = flags.DEFINE_list("setups", ["regression", "digits"], "regression and/or digits")
_STEPS = flags.DEFINE_integer("steps", 20, "timed outer steps per measurement")
_NUM_TASKS = flags.DEFINE_integer("num_tasks", 8, "population size")
_UNROLL = flags.DEFINE_integer("unroll_length", 20, "inner steps per outer step")

SETUPS = {
    "regression": ("regression_mlp", lambda g: g.hidden == (32, 32) and g.activation == "relu"
                   and g.batch_size == 64),
    "digits": ("digits_mlp", lambda g: True),
}


def measure(setup: str, lopt_name: str, estimator_name: str) -> dict:
    if setup not in SETUPS:
        raise ValueError(f"unknown setup {setup!r}; valid: {sorted(SETUPS)}")
    family_name, pick = SETUPS[setup]
    family = models.get_family(family_name)
    group = next(g for g in family.groups("meta_train") if pick(g))
    lopt = lo.get_lopt(lopt_name)
    unroller = meta.TruncatedUnroller(family, group, lopt, unroll_length=_UNROLL.value,
                                      schedule=meta.LogUniformSchedule(100, 1000))
    trainer = meta.MetaTrainer(unroller, meta.get_estimator(estimator_name),
                               num_tasks=_NUM_TASKS.value,
                               mesh=meta.population_mesh(jax.devices()[:1]))
    state = trainer.init(jax.random.key(0), lopt.init(jax.random.key(0)))
    start = time.perf_counter()
    state, _ = trainer.step(state)
    jax.block_until_ready(state)
    compile_s = time.perf_counter() - start
    times = []
    for _ in range(_STEPS.value):
        start = time.perf_counter()
        state, _ = trainer.step(state)
        jax.block_until_ready(state)
        times.append(time.perf_counter() - start)
    median = float(np.median(times))
    return {"setup": setup, "group": repr(group), "lopt": lopt_name,
            "estimator": estimator_name, "num_tasks": _NUM_TASKS.value,
            "unroll_length": _UNROLL.value, "median_outer_step_s": median,
            "outer_steps_per_s": 1.0 / median,
            "inner_task_steps_per_s": _NUM_TASKS.value * _UNROLL.value / median,
            "first_step_s_incl_compile": compile_s, "timed_steps": _STEPS.value,
            "num_skipped": int(state.num_skipped), "device": str(jax.devices()[0])}


def main(argv):
    del argv
    tracker = tracking.start_run(_WORKDIR.value, config={
        "lopts": _LOPTS.value, "estimators": _ESTIMATORS.value, "setups": _SETUPS.value,
        "steps": _STEPS.value, "num_tasks": _NUM_TASKS.value, "unroll_length": _UNROLL.value})
    results = []
    for setup in _SETUPS.value:
        for lopt_name in _LOPTS.value:
            for estimator_name in _ESTIMATORS.value:
                row = measure(setup, lopt_name, estimator_name)
                results.append(row)
                tracker.log_metrics(len(results), {k: v for k, v in row.items()
                                                   if isinstance(v, (int, float))})
                print(f"{setup:10s} {lopt_name:10s} {estimator_name:6s} "
                      f"{row['inner_task_steps_per_s']:9.0f} inner task-steps/s "
                      f"({row['outer_steps_per_s']:.2f} outer steps/s)", flush=True)
    path = Path(_WORKDIR.value) / "results.json"
    path.write_text(json.dumps(results, indent=1))
    tracker.log_artifact(path)
    tracker.finish()


if __name__ == "__main__":
    app.run(main)
