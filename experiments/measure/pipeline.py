"""Pipeline parallelism measured: bubbles from the schedule tables, compiled memory, step times.

    python -m experiments.pipeline_bench --workdir workdirs/pipeline_bench \
        [--config.memory_microbatches=4,8,16,32 --config.timing_repeats=5 ...]
    python -m experiments.parallelism --config.mode=pp ...     # calls run(config, workdir)

Three measurements of `parallel.pipeline` on a stack of residual-MLP stages:
  1. bubble: idle op slots counted from `parallel.pipeline_schedule` tables for several (p, m),
     next to the formula (p-1)/(m+p-1) that GPipe and 1F1B share, and the most micro-batches
     a stage holds (GPipe: m; 1F1B: min(p, m)). No timing involved.
  2. memory: per-device temp bytes of the compiled training step (loss + grads) from XLA's
     memory analysis, as m grows with the micro-batch size fixed, for GPipe, GPipe with full
     remat inside stages, and 1F1B; the batch itself is an argument, not temp. "slope" is the
     growth per added micro-batch, in units of one micro-batch's stage activation.
  3. step time: median wall time of the jitted step over `timing_repeats` runs (after one
     compiling call) for GPipe, 1F1B (`stage_ops="switch"`) and 1F1B masked, and of the
     sequential single-device reference, in the same run. On simulated CPU devices the
     "devices" share the host's cores, so these are ratios of this machine's run, not a
     speed-up forecast for real accelerators.

Writes results.json, report.md and pipeline.png to the workdir, metrics through the tracker.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments.measure.outputs import write_outputs
from experiments.measure.tables import records_table
from experiments.measure.timing import median_seconds
from parallel import pipeline
from parallel import pipeline_schedule as ps
from parallel.mesh import make_mesh, named


def _ints(text: str | int) -> list[int]:
    return [int(v) for v in str(text).split(",") if v.strip()]


def residual_mlp_stage(params, x):
    return x + jax.nn.gelu(x @ params["w_in"]) @ params["w_out"]


def mse(outputs, targets):
    return jnp.mean((outputs - targets) ** 2)


def _stage_params(config, mesh):
    k_in, k_out = jax.random.split(jax.random.key(config.seed))
    p, width, hidden = config.num_stages, config.width, config.hidden
    params = {
        "w_in": jax.random.normal(k_in, (p, width, hidden)) / np.sqrt(width),
        "w_out": jax.random.normal(k_out, (p, hidden, width)) / np.sqrt(hidden),
    }
    return jax.device_put(params, named(mesh, "stage"))


def _step(mesh, num_microbatches, schedule, remat_policy=None, stage_ops="auto"):
    return jax.jit(functools.partial(
        pipeline.value_and_grad, residual_mlp_stage, mse, mesh=mesh,
        num_microbatches=num_microbatches, schedule=schedule, remat_policy=remat_policy,
        stage_ops=stage_ops,
    ))


# ----------------------------------------------------------------------------- measurements


def measure_bubbles(config) -> list[dict[str, Any]]:
    rows = []
    for p in _ints(config.bubble_stages):
        for m in _ints(config.bubble_microbatches):
            gpipe = ps.schedule_table("gpipe", p, m)
            one_f_one_b = ps.schedule_table("1f1b", p, m)
            rows.append({
                "num_stages": p,
                "num_microbatches": m,
                "gpipe_counted": ps.bubble_fraction(gpipe),
                "gpipe_formula": ps.gpipe_bubble_formula(p, m),
                "1f1b_counted": ps.bubble_fraction(one_f_one_b),
                "1f1b_formula": ps.gpipe_bubble_formula(p, m),
                "gpipe_max_live": int(ps.max_live_microbatches(gpipe).max()),
                "1f1b_max_live": int(ps.max_live_microbatches(one_f_one_b).max()),
            })
    return rows


MEMORY_VARIANTS = (("gpipe", None), ("gpipe+remat_full", "full"), ("1f1b", None))
# (row name, schedule, stage_ops): 1F1B with only the scheduled op per tick, and masked.
TIMING_VARIANTS = (("gpipe", "gpipe", "auto"), ("1f1b", "1f1b", "switch"),
                   ("1f1b_masked", "1f1b", "masked"))


def measure_memory(config, mesh) -> list[dict[str, Any]]:
    params = _stage_params(config, mesh)
    rows = []
    for m in _ints(config.memory_microbatches):
        batch = jax.ShapeDtypeStruct((config.microbatch_size * m, config.width), jnp.float32)
        row = {"num_microbatches": m}
        for name, policy in MEMORY_VARIANTS:
            schedule = name.split("+")[0]
            compiled = _step(mesh, m, schedule, policy).lower(params, batch, batch).compile()
            temp = int(compiled.memory_analysis().temp_size_in_bytes)
            row[f"{name}_temp_bytes"] = temp
        rows.append(row)
    activation_bytes = config.microbatch_size * config.width * 4
    for before, after in zip(rows, rows[1:], strict=False):
        added = after["num_microbatches"] - before["num_microbatches"]
        for name, _ in MEMORY_VARIANTS:
            growth = after[f"{name}_temp_bytes"] - before[f"{name}_temp_bytes"]
            after[f"{name}_slope"] = growth / added / activation_bytes
    return rows


def measure_step_times(config, mesh) -> list[dict[str, Any]]:
    params = _stage_params(config, mesh)
    host_params = jax.device_get(params)
    reference = jax.jit(functools.partial(pipeline.sequential_reference, residual_mlp_stage, mse))
    rows = []
    for m in _ints(config.timing_microbatches):
        key = jax.random.key(config.seed + m)
        inputs = jax.random.normal(key, (config.microbatch_size * m, config.width))
        targets = jnp.sin(inputs)
        row = {"num_microbatches": m, "sequential_s": median_seconds(
            reference, host_params, *jax.device_get((inputs, targets)),
            repeats=config.timing_repeats)}
        for name, schedule, stage_ops in TIMING_VARIANTS:
            seconds = median_seconds(_step(mesh, m, schedule, stage_ops=stage_ops), params,
                                      inputs, targets, repeats=config.timing_repeats)
            row[f"{name}_s"] = seconds
            row[f"{name}_over_sequential"] = seconds / row["sequential_s"]
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- outputs


def _cell(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else f"{value}"


def format_report(results: dict[str, Any]) -> str:
    bubble_cols = ["num_stages", "num_microbatches", "gpipe_counted", "gpipe_formula",
                   "1f1b_counted", "1f1b_formula", "gpipe_max_live", "1f1b_max_live"]
    memory_rows = [
        {"num_microbatches": r["num_microbatches"]}
        | {f"{n} MiB": r[f"{n}_temp_bytes"] / 2**20 for n, _ in MEMORY_VARIANTS}
        | {f"{n} slope": r.get(f"{n}_slope", float("nan")) for n, _ in MEMORY_VARIANTS}
        for r in results["memory"]
    ]
    time_cols = ["num_microbatches", "sequential_s"] + [
        f"{name}{suffix}" for suffix in ("_s", "_over_sequential") for name, *_ in TIMING_VARIANTS]
    setup = results["setup"]
    text = "\n\n".join([
        "# Pipeline parallelism: bubble, memory, step time",
        f"Devices: {setup['devices']} ({setup['device_kind']}). Stages p={setup['num_stages']}, "
        f"stage = residual MLP {setup['width']}->{setup['hidden']}->{setup['width']}, "
        f"micro-batch size {setup['microbatch_size']}, float32. Host load average at the start: "
        f"{setup['load_average_1min']:.2f}.",
        "## Bubble (idle op slots, counted from the schedule tables)",
        records_table(results["bubble"], bubble_cols, fmt=_cell),
        "## Per-device compiled temp memory of the training step (MiB), and its growth per "
        "added micro-batch in micro-batch activations (slope)",
        records_table(memory_rows, fmt=_cell),
        "## Step time, median seconds (ratios to the sequential one-device reference)",
        "1f1b runs only each stage's scheduled op per tick (`stage_ops='switch'`); 1f1b_masked "
        "runs forward and backward on every stage every tick and keeps the scheduled one (the "
        "fallback for stage programs with collective-permutes). On simulated CPU devices all "
        "'devices' share the host's cores: these are ratios on this machine, not speed-ups.",
        records_table(results["step_time"], time_cols, fmt=_cell),
    ])
    return text + "\n"


def write_plot(results: dict[str, Any], workdir: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_bubble, ax_mem) = plt.subplots(1, 2, figsize=(11, 4))
    for p in sorted({r["num_stages"] for r in results["bubble"]}):
        rows = [r for r in results["bubble"] if r["num_stages"] == p]
        ms = [r["num_microbatches"] for r in rows]
        ax_bubble.plot(ms, [r["gpipe_counted"] for r in rows], "o", label=f"GPipe p={p}")
        ax_bubble.plot(ms, [r["gpipe_formula"] for r in rows], "k:", lw=1)
        ax_bubble.plot(ms, [r["1f1b_counted"] for r in rows], "s--", label=f"1F1B p={p}")
    ax_bubble.set(xscale="log", xlabel="micro-batches m", ylabel="idle fraction",
                  title="bubble (dotted: (p-1)/(m+p-1))")
    ax_bubble.legend(fontsize=7)
    ms = [r["num_microbatches"] for r in results["memory"]]
    for name, _ in MEMORY_VARIANTS:
        mib = [r[f"{name}_temp_bytes"] / 2**20 for r in results["memory"]]
        ax_mem.plot(ms, mib, "o-", label=name)
    ax_mem.set(xscale="log", xlabel="micro-batches m (fixed micro-batch size)",
               ylabel="MiB per device", title="compiled temp memory of a training step")
    ax_mem.legend(fontsize=8)
    fig.tight_layout()
    path = workdir / "pipeline.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Run the three measurements; write results.json, report.md, pipeline.png to `workdir`."""
    from experiments import tracking

    workdir = Path(workdir)
    if len(jax.devices()) < config.num_stages:
        raise ValueError(
            f"num_stages={config.num_stages} needs that many devices, found "
            f"{len(jax.devices())}; on CPU set jax_num_cpu_devices before JAX starts"
        )
    tracker = tracking.start_run(workdir, config=config)
    mesh = make_mesh({"stage": config.num_stages}, devices=jax.devices()[: config.num_stages])
    results = {
        "setup": {
            "devices": len(mesh.devices.flat), "device_kind": jax.devices()[0].device_kind,
            "num_stages": config.num_stages, "width": config.width, "hidden": config.hidden,
            "microbatch_size": config.microbatch_size,
            "load_average_1min": os.getloadavg()[0],
        },
        "bubble": measure_bubbles(config),
        "memory": measure_memory(config, mesh),
        "step_time": measure_step_times(config, mesh),
    }
    for row in results["memory"]:
        tracker.log_metrics(row["num_microbatches"], {f"memory/{k}": v for k, v in row.items()})
    for row in results["step_time"]:
        tracker.log_metrics(row["num_microbatches"], {f"time/{k}": v for k, v in row.items()})
    write_outputs(workdir, results, format_report(results), tracker=tracker,
                  figures=[write_plot(results, workdir)])
    return results
