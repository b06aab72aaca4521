"""Meta-training throughput: inner task-steps per second (tasks x unroll / outer-step time),
and where the time of an outer step goes.

Setups: (a) "regression": the regression-MLP family's 32-32 relu group, batch 64 (the
16-32-32-1 MLP on synthetic data); (b) "digits": the digits-MLP family's first group.
For each setup, learned optimizer and estimator: one `MetaTrainer` outer step (jitted, state
donated, scan over the unroll, tasks x particles vmapped), compiled first (excluded), then
timed `steps` times. All measurements of a setup are interleaved round-robin (one call of
each per round), so load from other processes hits them alike; medians are reported.

The breakdown times, on the same population shapes, the parts an outer step is made of:
  * lopt: K learned-optimizer updates of every particle on synthetic gradients (PES/ES:
    forward; TBPTT: forward + the gradient w.r.t. theta, each step rematerialized
    unless `remat=False`);
  * task: K value-and-grad steps of every particle's task with plain SGD (TBPTT: plus the
    gradient through them w.r.t. the learning rate: the task's second-order share), minus
    the make_task time it includes;
  * make_task: building every task of the population from its task parameters, which each
    outer step does once per task (the data-subset permutation and noisy labels are drawn
    with the task parameters, at a reset only);
the rest of the step (estimator bookkeeping, resets, objective) is `other`.

    python -m experiments.bench_meta --workdir workdirs/bench_meta
    python -m experiments.bench_meta --workdir workdirs/bench_meta_pes \
        --config.estimators=pes --config.setups=regression --config.steps=50

Writes results.json, report.md and one metrics.jsonl row per measurement into the workdir.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

import learned_opt as lo
import models
from experiments import cli, tracking
from experiments.measure.outputs import write_outputs
from learned_opt import meta

SETUPS = {
    "regression": ("regression_mlp", lambda g: g.hidden == (32, 32) and g.activation == "relu"
                   and g.batch_size == 64),
    "digits": ("digits_mlp", lambda g: True),
}
# Our lopt names -> the reference library's (`../shared/reference/bench_lo.py` rows).
REFERENCE_LOPTS = {"mlp": "MLPLOpt", "adafac_mlp": "AdafacMLPLOpt"}


def read_reference(path: str | os.PathLike) -> dict:
    """The reference library's meta-training figures from its `lo_reference_results.json`:
    {"rates": {(lopt, estimator): inner task-steps/s of its FASTER mode}, "modes": {...},
    "uptime_start", "uptime_end"}. Only the standard setup ("regression") has them."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config.reference={str(path)!r}: no such file (write it with "
                         "../shared/reference/bench_lo.py)")
    data = json.loads(path.read_text())
    rows = (data.get("meta") or {}).get("rows")
    if not rows:
        raise ValueError(f"{path}: no meta-training rows (was bench_lo.py run with --skip-meta?)")
    ours = {name: lopt for lopt, name in REFERENCE_LOPTS.items()}
    rates, modes = {}, {}
    for row in rows:
        key = (ours.get(row["lopt"], row["lopt"]), row["estimator"].lower())
        if row["inner_steps_per_s"] > rates.get(key, 0.0):
            rates[key], modes[key] = float(row["inner_steps_per_s"]), row["mode"]
    return {"rates": rates, "modes": modes, "uptime_start": data.get("uptime_start", ""),
            "uptime_end": data.get("uptime_end", ""), "path": str(path.resolve())}


def attach_reference(rows: list[dict], reference: dict | None) -> None:
    """Add the reference's faster-mode rate and our ratio to it to every regression row of an
    architecture at its defaults (rows measured with `lopt_kwargs` get none)."""
    if reference is None:
        return
    for row in rows:
        rate = reference["rates"].get((row["lopt"], row["estimator"]))
        if row["setup"] == "regression" and rate and not row.get("lopt_kwargs"):
            row["reference_inner_task_steps_per_s"] = rate
            row["reference_mode"] = reference["modes"][(row["lopt"], row["estimator"])]
            row["ratio_to_reference"] = row["inner_task_steps_per_s"] / rate


def validate(config: ml_collections.ConfigDict) -> None:
    """Fail before measuring on an unknown name; `--config.lopts=mlp,hyper` (one string from
    the flag parser) is split, as are setups and estimators."""
    for key in ("setups", "lopts", "estimators"):
        config[key] = cli.names(config[key])
    for setup in config.setups:
        if setup not in SETUPS:
            raise ValueError(f"unknown setup {setup!r}; valid: {sorted(SETUPS)}")
    for name in config.lopts:
        if name not in lo.list_lopts():
            raise ValueError(f"unknown lopt {name!r}; valid: {lo.list_lopts()}")
        try:
            build_lopt(config, name)
        except (TypeError, ValueError) as e:  # not a hyperparameter of it, or a bad value
            raise ValueError(f"config.lopt_kwargs={config.lopt_kwargs!r}: {e}") from None
    for name in config.estimators:
        if name not in meta.estimators.ESTIMATORS:
            raise ValueError(f"unknown estimator {name!r}; valid: "
                             f"{sorted(meta.estimators.ESTIMATORS)}")
    if config.reference:
        read_reference(config.reference)  # a missing or empty file fails before compiling


def lopt_kwargs(config) -> dict:
    """`config.lopt_kwargs` (architecture hyperparameters for every lopt measured, e.g.
    "hidden_size=4,orthogonalize=False": `cli.keyword_args`) as a dict."""
    return cli.keyword_args(config.get("lopt_kwargs"))


def build_lopt(config, name: str):
    """The architecture `name` with `config.lopt_kwargs`."""
    return lo.get_lopt(name, **lopt_kwargs(config))


def setup_group(setup: str):
    family = models.get_family(SETUPS[setup][0])
    return family, next(g for g in family.groups("meta_train") if SETUPS[setup][1](g))


# ---------------------------------------------------------------------- timed callables


class Timed:
    """A zero-argument callable run repeatedly; `call()` must block until its result is ready."""

    def __init__(self, name: str, call):
        self.name, self.call, self.times = name, call, []

    def compile(self) -> float:
        start = time.perf_counter()
        self.call()
        return time.perf_counter() - start

    def time_once(self) -> None:
        start = time.perf_counter()
        self.call()
        self.times.append(time.perf_counter() - start)

    @property
    def median_s(self) -> float:
        return float(np.median(self.times))


def outer_step(config, trainer, theta) -> Timed:
    holder = {"state": trainer.init(jax.random.key(0), theta)}

    def call():
        holder["state"], _ = trainer.step(holder["state"])  # the state is donated
        jax.block_until_ready(holder["state"])
    timed = Timed("step", call)
    timed.holder = holder
    timed.compiler_options = trainer.compiler_options or {}
    return timed


def _population_params(task_fn, family, group, count):
    keys = jax.random.split(jax.random.key(0), count)
    task_params = jax.vmap(lambda k: family.sample_task_params(k, group))(keys)
    params = jax.vmap(lambda tp, k: task_fn(tp).init(k))(task_params, keys)
    return task_params, params


def _loss_like(grads) -> jax.Array:
    """A scalar standing in for the loss, for optimizers with loss features."""
    return sum(jnp.mean(g * g) for g in jax.tree.leaves(grads))


def lopt_part(config, lopt, family, group, estimator) -> Timed:
    """K updates of every particle on synthetic gradients (TBPTT: plus d/dtheta)."""
    count = config.num_tasks * estimator.num_particles
    _, params = _population_params(lambda tp: family.make_task(group, tp), family, group, count)
    num_steps = config.max_horizon if lopt.needs_num_steps else None

    def run(theta, params):
        tx = lopt.optimizer(theta, num_steps=num_steps)
        state = jax.vmap(tx.init)(params)

        def body(carry, k):
            p, s = carry
            g = jax.tree.map(lambda x: jnp.sin(3.0 * x + k), p)  # gradient-like, varies
            u, s = jax.vmap(lambda g, s, p: tx.update(g, s, p, value=_loss_like(g)))(
                g, s, p)
            return (optax.apply_updates(p, u), s), None
        if estimator.name == "tbptt" and config.remat:
            body = jax.checkpoint(body, prevent_cse=False)
        (p, _), _ = jax.lax.scan(body, (params, state), jnp.arange(config.unroll_length,
                                                                   dtype=jnp.float32))
        return sum(jnp.sum(x * x) for x in jax.tree.leaves(p))

    fn = jax.jit(jax.grad(run) if estimator.name == "tbptt" else run)
    theta = lopt.init(jax.random.key(0))
    return Timed("lopt", lambda: jax.block_until_ready(fn(theta, params)))


def task_part(config, family, group, estimator) -> Timed:
    """K SGD steps of every particle's task (TBPTT: plus d/d learning rate through them).

    Laid out like the outer step: each task is built once and its particles vmapped, so the
    time includes building the tasks (`make_task_part`), which `measure_setup` subtracts.
    """
    num_particles = estimator.num_particles
    task_params, params = _population_params(lambda tp: family.make_task(group, tp), family,
                                             group, config.num_tasks)
    params = jax.tree.map(lambda x: jnp.stack([x] * num_particles, axis=1), params)

    def run(lr, task_params, params):
        def one(tp, particles):
            task = family.make_task(group, tp)

            def body(p, k):
                batch = task.sample_batch(jax.random.fold_in(jax.random.key(1), k), "train")
                loss, g = jax.value_and_grad(task.loss)(p, batch)
                return jax.tree.map(lambda x, y: x - lr * y, p, g), loss
            if estimator.name == "tbptt" and config.remat:
                body = jax.checkpoint(body, prevent_cse=False)
            unroll = lambda p: jnp.sum(jax.lax.scan(body, p, jnp.arange(config.unroll_length))[1])
            return jnp.sum(jax.vmap(unroll)(particles))
        return jnp.sum(jax.vmap(one)(task_params, params))

    fn = jax.jit(jax.grad(run) if estimator.name == "tbptt" else run)
    lr = jnp.float32(1e-2)
    return Timed("task", lambda: jax.block_until_ready(fn(lr, task_params, params)))


def make_task_part(config, family, group) -> Timed:
    """Build every task of the population once from its task parameters (what an outer step
    does per task; drawing the parameters happens only at a reset)."""
    keys = jax.random.split(jax.random.key(0), config.num_tasks)
    task_params = jax.vmap(lambda k: family.sample_task_params(k, group))(keys)

    def build(tp):
        # A batch from the built task, so that everything it precomputes is used.
        return family.make_task(group, tp).sample_batch(jax.random.key(1), "train")
    fn = jax.jit(jax.vmap(build))
    return Timed("make_task", lambda: jax.block_until_ready(fn(task_params)))


# ---------------------------------------------------------------------------- measurement


def measure_setup(config, setup: str) -> list[dict]:
    family, group = setup_group(setup)
    if jax.device_count() < config.num_devices:
        raise ValueError(f"config.num_devices={config.num_devices} but this process has "
                         f"{jax.device_count()} device(s); on CPU run `python -m "
                         f"experiments.bench_meta` (it splits the host into num_devices)")
    mesh = meta.population_mesh(jax.devices()[:config.num_devices])
    cases = []
    for lopt_name in config.lopts:
        lopt = build_lopt(config, lopt_name)
        for estimator_name in config.estimators:
            estimator = meta.get_estimator(estimator_name)
            unroller = meta.TruncatedUnroller(
                family, group, lopt, unroll_length=config.unroll_length,
                schedule=meta.LogUniformSchedule(config.min_horizon, config.max_horizon),
                remat=config.remat)
            trainer = meta.MetaTrainer(unroller, estimator, num_tasks=config.num_tasks,
                                       mesh=mesh)
            parts = [outer_step(config, trainer, lopt.init(jax.random.key(0)))]
            if config.breakdown:
                parts += [lopt_part(config, lopt, family, group, estimator),
                          task_part(config, family, group, estimator)]
            cases.append(((lopt_name, estimator_name), parts))
    shared = [make_task_part(config, family, group)] if config.breakdown else []
    compile_s = {}
    for key, parts in cases:
        for part in parts:
            compile_s[key + (part.name,)] = part.compile()
            print(f"compiled {setup} {key} {part.name} in {compile_s[key + (part.name,)]:.1f}s",
                  flush=True)
    for part in shared:
        part.compile()
    everything = [p for _, parts in cases for p in parts] + shared
    for _ in range(config.steps):
        for part in everything:
            part.time_once()
    rows = []
    make_task_s = shared[0].median_s if shared else None
    for (lopt_name, estimator_name), parts in cases:
        step = parts[0]
        median = step.median_s
        state = step.holder["state"]
        row = {"setup": setup, "group": repr(group), "lopt": lopt_name,
               "estimator": estimator_name, "num_tasks": config.num_tasks,
               "unroll_length": config.unroll_length, "median_outer_step_ms": 1e3 * median,
               "inner_task_steps_per_s": config.num_tasks * config.unroll_length / median,
               "lopt_kwargs": lopt_kwargs(config),
               "compile_s": compile_s[(lopt_name, estimator_name, "step")],
               "compiler_options": step.compiler_options,
               "timed_steps": config.steps, "num_skipped": int(state.num_skipped),
               "remat": bool(config.remat)}
        if config.breakdown:
            row["lopt_ms"] = 1e3 * parts[1].median_s
            row["task_ms"] = 1e3 * (parts[2].median_s - make_task_s)  # built once per task
            row["make_task_ms"] = 1e3 * make_task_s
            row["other_ms"] = row["median_outer_step_ms"] - (
                row["lopt_ms"] + row["task_ms"] + row["make_task_ms"])
            shares = {k: row[f"{k}_ms"] for k in ("lopt", "task", "make_task", "other")}
            row["limited_by"] = max(shares, key=shares.get)
        rows.append(row)
    return rows


def format_report(config, rows: list[dict], env: dict) -> str:
    lines = [
        "# Meta-training throughput",
        "",
        f"{config.num_tasks} tasks x unroll {config.unroll_length}, horizons log-uniform "
        f"[{config.min_horizon}, {config.max_horizon}], {config.num_devices} device(s), "
        f"lopt hyperparameters {lopt_kwargs(config) or 'default'}, "
        f"TBPTT remat {'on' if config.remat else 'off'}: "
        f"{env['device']}; load average at start {env['load_start']}, at end {env['load_end']}. "
        f"Median of {config.steps} interleaved outer steps, compile excluded.",
        "",
        "| setup | lopt | estimator | task-steps/s | vs reference | step ms | compile s | "
        "lopt ms | task ms | make_task ms | other ms | limited by |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ref = (f"{r['ratio_to_reference']:.2f}x of {r['reference_inner_task_steps_per_s']:.0f}"
               f" ({r['reference_mode']})" if "ratio_to_reference" in r else "-")
        parts = " | ".join(f"{r[k]:.1f}" if k in r else "-"
                           for k in ("lopt_ms", "task_ms", "make_task_ms", "other_ms"))
        lines.append(f"| {r['setup']} | {r['lopt']} | {r['estimator']} | "
                     f"{r['inner_task_steps_per_s']:.0f} | {ref} | "
                     f"{r['median_outer_step_ms']:.1f} | {r['compile_s']:.1f} | {parts} | "
                     f"{r.get('limited_by', '-')} |")
    if env.get("reference"):
        ref = env["reference"]
        lines += ["", f"Reference: `{ref['path']}` (its faster mode per row; its load: "
                  f"`{ref['uptime_start']}` -> `{ref['uptime_end']}`). A ratio is meaningful only "
                  "when both ran on this machine back to back."]
    else:
        lines += ["", "No reference results given (`--config.reference=PATH` to "
                  "lo_reference_results.json): no ratio to the reference library is claimed."]
    options = sorted({(r["estimator"], json.dumps(r["compiler_options"])) for r in rows})
    lines += ["", "XLA options of the outer step (`MetaTrainer.compiler_options`; {} is XLA's "
              "defaults): " + "; ".join(f"{e}: `{o}`" for e, o in options) + "."]
    lines += ["", "Parts are timed separately on the same shapes (see the script's docstring); "
              "they overlap imperfectly with the fused step, so `other` can be negative."]
    return "\n".join(lines) + "\n"


def run(config, workdir) -> list[dict]:
    validate(config)
    workdir = Path(workdir)
    tracker = tracking.start_run(workdir, config=config.to_dict())
    reference = read_reference(config.reference) if config.reference else None
    env = {"device": str(jax.devices()[0]), "load_start": os.getloadavg(),
           "reference": reference and {k: v for k, v in reference.items()
                                       if k not in ("rates", "modes")}}
    rows = []
    for setup in config.setups:
        for row in measure_setup(config, setup):
            attach_reference([row], reference)
            rows.append(row)
            tracker.log_metrics(len(rows), {k: v for k, v in row.items()
                                            if isinstance(v, (int, float))
                                            and not isinstance(v, bool)})
            print(f"{row['setup']:10s} {row['lopt']:10s} {row['estimator']:6s} "
                  f"{row['inner_task_steps_per_s']:9.0f} inner task-steps/s "
                  f"({row['median_outer_step_ms']:.1f} ms / outer step, limited by "
                  f"{row.get('limited_by', '?')})", flush=True)
    env["load_end"] = os.getloadavg()
    report = format_report(config, rows, env)
    write_outputs(workdir, {"config": config.to_dict(), "env": env, "rows": rows}, report,
                  tracker=tracker)
    print(report)
    return rows
