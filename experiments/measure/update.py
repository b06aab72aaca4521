"""Speed and memory of every learned optimizer's `update`, as ratios to optax.adam in one run.

For each optimizer (optax.adam, optax.sgd and every registered learned optimizer with its
default hyperparameters) and each parameter count (three dense layers):
  * median jitted `update` time (state donated and returned first, so every state buffer is
    updated in place; compile excluded), and its ratio to Adam;
  * optimizer-state bytes per parameter;
  * a roofline: the larger of the update's FLOPs (XLA cost analysis) at this machine's measured
    FLOP rate (a big matmul) and the bytes it must move at the measured memory bandwidth (a big
    in-place scale); the minimum bytes are grads + state read, updates + state written, plus
    params read for optimizers whose update uses them; XLA's own bytes-accessed estimate of the
    compiled update is reported beside it;
and the full train step (forward + backward + update, params and state donated) of
~10M-parameter models, as ratios to Adam's step on the same model and batch: the MLP
classifier (10.5M params) at a sweep of batch sizes (`train_batches`, default 128, 512, 2048)
and the zoo's causal Transformer LM (`text_transformer`, 10.7M params, nanoGPT's
shakespeare-char shape) at 16 sequences x 128 tokens (`experiments.bench_train_step`), each
with XLA's FLOPs of forward + backward and of the update on that model, and whether
AdafacMLPLOpt meets the issue's target (<= 1.3x Adam).
On the 2-core dev CPU (an AVX-512 Xeon: 319 GFLOP/s f32 matmul) it does at MLP batch 512
(1.29x), 2048 (1.08x) and on the Transformer LM (1.01x), but not on the MLP at batch 128
(1.76x): there Adam's whole step takes ~50 ms and the update alone ~45 ms (3.9 GFLOP, 372
FLOP/param of elementwise code that XLA's CPU loops run at ~50% of the matmul rate, plus its
passes over the state).

Timings are interleaved round-robin over the optimizers (one call of each per round), so load
from other processes affects all of them alike and the ratios stay meaningful on a busy machine.

    python -m experiments.bench_update --workdir workdirs/bench_update
    python -m experiments.bench_update --workdir workdirs/bench_update_quick \
        --config.sizes=1000000 --config.repeats=5 --config.train_step=False
    python -m experiments.bench_update --workdir workdirs/bench_update_lm \
        --config.sizes=1000000 --config.train_batches=128 --config.transformer.batch_size=32

Writes results.json and report.md (the table) into the workdir.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import learned_opt as lo
from experiments import cli
from experiments.measure.outputs import write_outputs
from experiments.measure.timing import median_seconds
from experiments.measure.train_step import (
    bench_train_step,
    format_train_table,
    make_optimizer,
    target_summary,
    train_models,
    xla_cost,
)

# ----------------------------------------------------------------------------- machine rates


def _transcendental_rate(size: int = 1 << 21, depth: int = 32) -> float:
    """tanh evaluations per second in a compute-bound loop (`depth` independent tanh per entry,
    summed, so throughput and not latency is measured).

    XLA's cost analysis counts each transcendental (exp, log, tanh, ...) once, apart from the
    FLOPs, but on CPU each is a polynomial and a divide: tens of FLOPs that the matmul rate
    does not account for.
    """
    def many(x):
        return sum(jnp.tanh(x * (1.0 + 0.01 * i)) for i in range(depth))

    seconds = median_seconds(jax.jit(many), jnp.linspace(-3.0, 3.0, size, dtype=jnp.float32))
    return size * depth / seconds


def _per_entry_mlp_rate(size: int = 1 << 22) -> float:
    """FLOP rate of the per-parameter network alone (`nets.mlp_apply`, AdafacMLPLOpt's
    default 7 inputs x 16 hidden x 2 outputs) on `size` entries: the attainable rate of the
    unrolled elementwise loop every MLP architecture runs, to set beside the matmul rate."""
    from learned_opt import nets

    theta = nets.mlp_init(jax.random.key(0), 7, 4, 16, 2)
    xs = [jnp.full((size,), 0.1 * (i + 1), jnp.float32) for i in range(7)]
    fn = jax.jit(lambda theta, xs: nets.mlp_apply(theta, xs, jnp.ones((4,), jnp.float32)))
    compiled = fn.lower(theta, xs).compile()
    flops = float(xla_cost(compiled).get("flops", 0.0))
    return flops / median_seconds(compiled, theta, xs)


def measure_machine(matmul_size: int = 2048, bandwidth_floats: int = 64 * 1024 * 1024,
                    tanh_size: int = 1 << 21, mlp_size: int = 1 << 22) -> dict:
    """Measured f32 FLOP rate (2048^3 matmul) and memory bandwidth (256 MiB scaled in place).

    The bandwidth kernel donates its input, so it streams through memory that is already
    mapped, as an update that donates its state does; writing a fresh 256 MiB result each call
    instead measures the kernel's page faults (~1.5 GB/s on the 2-core dev box vs ~10 GB/s).
    The probe sizes are arguments only so that tests can run it small; the report assumes the
    defaults.

        machine = measure_machine()  # {"flop_rate": ..., "bandwidth": ..., ...}
    """
    a = jnp.ones((matmul_size, matmul_size), jnp.float32)
    seconds = median_seconds(jax.jit(lambda x: x @ x), a)
    flop_rate = 2 * matmul_size**3 / seconds
    scale = jax.jit(lambda x: x * 1.0001, donate_argnums=0)
    b = scale(jnp.ones((bandwidth_floats,), jnp.float32))
    times = []
    for _ in range(5):
        b = jax.block_until_ready(b)
        start = time.perf_counter()
        b = jax.block_until_ready(scale(b))
        times.append(time.perf_counter() - start)
    bandwidth = 2 * b.nbytes / float(np.median(times))  # read + write
    return {"flop_rate": flop_rate, "bandwidth": bandwidth,
            "transcendental_rate": _transcendental_rate(tanh_size),
            "per_entry_mlp_flop_rate": _per_entry_mlp_rate(mlp_size),
            "device": str(jax.devices()[0].device_kind), "num_devices": jax.device_count()}


# ----------------------------------------------------------------------------- optimizers


def layer_shapes(num_params: int) -> list[tuple[int, int]]:
    """Three dense layers (2w x w, w x w, w x w) with ~num_params weights in total."""
    width = int(round((num_params / 4) ** 0.5))
    return [(2 * width, width), (width, width), (width, width)]


def tree_bytes(tree) -> int:
    return int(sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree)))


def _uses_params(tx, grads, state, params, loss) -> bool:
    """Whether `tx.update` reads `params` once dead code is removed (Adam and SGD do not)."""
    from jax._src.interpreters import partial_eval as pe  # dce_jaxpr has no public name

    closed = jax.make_jaxpr(lambda p: tx.update(grads, state, p, value=loss))(params)
    _, used_inputs = pe.dce_jaxpr(closed.jaxpr, [True] * len(closed.jaxpr.outvars))
    return any(used_inputs)


def roofline(flops: float, min_bytes: float, machine: dict) -> tuple[float, float, str]:
    """(FLOP time, byte time, bound) in seconds at `machine`'s measured rates; the roofline is
    the larger time, and `bound` names it ("compute" or "memory").

        roofline(2e9, 1e9, {"flop_rate": 1e9, "bandwidth": 1e9})  # (2.0, 1.0, "compute")
    """
    flop_time = flops / machine["flop_rate"]
    byte_time = min_bytes / machine["bandwidth"]
    return flop_time, byte_time, "compute" if flop_time > byte_time else "memory"


def update_row(name: str, num_params: int, median: float, adam_median: float, run: dict,
               machine: dict) -> dict:
    """One results.json / report row of the update benchmark from a timed `run` (its XLA
    "flops", "transcendentals", "xla_bytes", "state_bytes" and "min_bytes") and the medians
    (seconds) of this optimizer and of Adam in the same round-robin."""
    flop_time, byte_time, bound = roofline(run["flops"], run["min_bytes"], machine)
    transc_time = run["transcendentals"] / machine["transcendental_rate"]
    return {
        "optimizer": name, "num_params": num_params, "update_ms": 1e3 * median,
        "ratio_to_adam": median / adam_median,
        "state_bytes_per_param": run["state_bytes"] / num_params,
        "flops_per_param": run["flops"] / num_params,
        "min_bytes_per_param": run["min_bytes"] / num_params,
        "xla_bytes_per_param": run["xla_bytes"] / num_params,
        "roofline_flops_ms": 1e3 * flop_time, "roofline_bytes_ms": 1e3 * byte_time,
        "ratio_to_roofline": median / max(flop_time, byte_time),
        "bound": bound,
        "transcendentals_per_param": run["transcendentals"] / num_params,
        "roofline_transcendentals_ms": 1e3 * transc_time,
        # compute time counting the transcendentals at their own measured rate
        "ratio_to_roofline_with_transcendentals":
            median / max(flop_time + transc_time, byte_time),
    }


def bench_updates(config, size: int, machine: dict) -> list[dict]:
    key = jax.random.key(config.seed)
    shapes = layer_shapes(size)
    params = {f"dense{i}": 0.02 * jax.random.normal(jax.random.fold_in(key, i), s)
              for i, s in enumerate(shapes)}
    grads = jax.tree.map(lambda p: 0.1 * p + 1e-3, params)
    num_params = sum(p.size for p in jax.tree.leaves(params))
    loss = jnp.float32(1.0)
    runs = {}
    for name in config.optimizers:
        tx = make_optimizer(name, config.num_steps)
        state = tx.init(params)
        # (state, updates): the donated state buffers are matched to the outputs in order, so
        # they must come first or jax hands them to `updates` and XLA copies the new state.
        update = jax.jit(lambda g, s, p, tx=tx: tx.update(g, s, p, value=loss)[::-1],
                         donate_argnums=1)
        cost = xla_cost(update.lower(grads, state, params).compile())
        state_bytes = tree_bytes(state)
        reads_params = _uses_params(tx, grads, state, params, loss)
        state, updates = update(grads, state, params)
        jax.block_until_ready((state, updates))
        runs[name] = {"update": update, "state": state, "times": [],
                      "flops": float(cost.get("flops", 0.0)),
                      "transcendentals": float(cost.get("transcendentals", 0.0)),
                      "state_bytes": state_bytes,
                      "xla_bytes": float(cost.get("bytes accessed", 0.0)),
                      # grads read, state read and written, updates written, params read if used
                      "min_bytes": (2 * state_bytes
                                    + (3 if reads_params else 2) * tree_bytes(params))}
    for _ in range(config.repeats):  # round-robin: load drifts hit every optimizer alike
        for run in runs.values():
            start = time.perf_counter()
            run["state"], updates = run["update"](grads, run["state"], params)
            jax.block_until_ready((run["state"], updates))
            run["times"].append(time.perf_counter() - start)
    adam = float(np.median(runs["adam"]["times"])) if "adam" in runs else float("nan")
    return [update_row(name, int(num_params), float(np.median(run["times"])), adam, run, machine)
            for name, run in runs.items()]


# ----------------------------------------------------------------------------- report


def format_report(machine: dict, update_rows: list[dict], train_rows: list[dict]) -> str:
    lines = [
        "# Learned optimizer update benchmark",
        "",
        f"Device: {machine['device']} x{machine['num_devices']}; measured FLOP rate "
        f"{machine['flop_rate'] / 1e9:.1f} GFLOP/s (2048^3 f32 matmul), memory bandwidth "
        f"{machine['bandwidth'] / 1e9:.1f} GB/s (256 MiB scaled in place, read + write), "
        f"tanh rate {machine['transcendental_rate'] / 1e9:.2f} G/s (independent tanh); the "
        f"per-parameter MLP alone (7 x 16 x 2, unrolled elementwise loop) runs at "
        f"{machine['per_entry_mlp_flop_rate'] / 1e9:.1f} GFLOP/s.",
        "",
        "Roofline = max(FLOP time, byte time). FLOP time: the compiled update's FLOPs (XLA cost "
        "analysis: every elementwise op counts 1, a multiply-add 2) at the matmul rate. Byte "
        "time: the bytes the update must move (grads read; state read and written; updates "
        "written; params read when the update uses them) at the measured bandwidth. `bound` "
        "names the larger; `XLA B/param` is what the compiled program actually touches "
        "(XLA's bytes-accessed estimate), to compare with `min B/param`. XLA counts "
        "transcendentals (exp, log, tanh) apart from FLOPs; `transc. ms` is their count at "
        "the measured tanh rate, and the last column the ratio to max(FLOP time + transc. "
        "time, byte time).",
        "",
        "| optimizer | params | update ms | x Adam | state B/param | FLOP/param | "
        "min B/param | XLA B/param | roofline FLOP ms | roofline bytes ms | x roofline (bound) "
        "| transc./param | transc. ms | x roofline with transc. |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in update_rows:
        lines.append(
            f"| {r['optimizer']} | {r['num_params']:,} | {r['update_ms']:.2f} | "
            f"{r['ratio_to_adam']:.2f} | {r['state_bytes_per_param']:.1f} | "
            f"{r['flops_per_param']:.0f} | {r['min_bytes_per_param']:.0f} | "
            f"{r['xla_bytes_per_param']:.0f} | {r['roofline_flops_ms']:.2f} | "
            f"{r['roofline_bytes_ms']:.2f} | {r['ratio_to_roofline']:.2f} ({r['bound']}) | "
            f"{r['transcendentals_per_param']:.1f} | {r['roofline_transcendentals_ms']:.2f} | "
            f"{r['ratio_to_roofline_with_transcendentals']:.2f} |")
    if train_rows:
        lines += format_train_table(train_rows)
    return "\n".join(lines) + "\n"


def validate(config) -> None:
    """Fail before any measurement: every ratio is to Adam, so Adam must be measured; the
    names must be known. `--config.optimizers=adam,mlp` (which the flag parser hands over as
    one comma-separated name) is split."""
    config.optimizers = cli.names(config.optimizers)
    from learned_opt import pretrained

    shipped = tuple(f"pretrained:{card['name']}" for card in pretrained.list_pretrained())
    valid = ("adam", "sgd", "muon", *lo.list_lopts(), *shipped)
    unknown = [name for name in config.optimizers if name not in valid]
    if unknown:
        raise ValueError(f"unknown optimizers {unknown} in config.optimizers; valid: {valid}")
    if "adam" not in config.optimizers:
        raise ValueError(f"config.optimizers={tuple(config.optimizers)} lacks 'adam': every "
                         f"figure of this benchmark is a ratio to Adam measured in the same run")


def run(config, workdir) -> dict:
    """Run the benchmark; write results.json and report.md into `workdir`; return the
    results (machine, update rows, train-step rows, target verdict, config)."""
    validate(config)
    workdir = Path(workdir)
    try:
        from experiments import tracking
        tracker = tracking.start_run(workdir, config=config.to_dict())
    except ImportError:  # the tracker is optional for this script
        tracker = None
        workdir.mkdir(parents=True, exist_ok=True)
    machine = measure_machine()
    print(f"machine: {machine}")
    update_rows = []
    for size in config.sizes:
        rows = bench_updates(config, int(size), machine)
        update_rows += rows
        for r in rows:
            print(json.dumps(r))
    train_rows = []
    if config.train_step:
        for make_model in train_models(config):
            train_rows += bench_train_step(config, make_model())
    report = format_report(machine, update_rows, train_rows)
    print(report)
    results = {"machine": machine, "update": update_rows, "train_step": train_rows,
               "train_step_target": target_summary(train_rows) if train_rows else None,
               "config": config.to_dict()}
    write_outputs(workdir, results, report)  # logged below, with the metrics
    if tracker is not None:
        for i, r in enumerate(update_rows):
            tracker.log_metrics(i, {f"{r['optimizer']}_{r['num_params']}_ratio_to_adam":
                                    r["ratio_to_adam"]})
        for i, r in enumerate(train_rows):
            tracker.log_metrics(i, {f"step_{r['optimizer']}_{r['model']}_{r['batch']}"
                                    "_ratio_to_adam": r["ratio_to_adam"]})
        tracker.log_artifact(workdir / "results.json")
        tracker.log_artifact(workdir / "report.md")
        tracker.finish()
    return results
