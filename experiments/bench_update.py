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
and the full train step (forward + backward + update) of a ~10M-parameter MLP classifier at
batch 128, as a ratio to Adam's train step.

Timings are interleaved round-robin over the optimizers (one call of each per round), so load
from other processes affects all of them alike and the ratios stay meaningful on a busy machine.

    python -m experiments.bench_update --workdir workdirs/bench_update
    python -m experiments.bench_update --workdir workdirs/bench_update_quick \
        --config.sizes=1000000 --config.repeats=5 --config.train_step=False

Writes results.json and report.md (the table) into the workdir.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

import learned_opt as lo
from experiments import cli


def default_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.sizes = (1_000_000, 10_000_000)  # parameter counts of the three-layer stacks
    config.optimizers = ("adam", "sgd", *lo.list_lopts())
    config.repeats = 15                      # timed rounds (medians reported)
    config.num_steps = 1000                  # horizon given to optimizers that need one
    config.train_step = True                 # also time the ~10M-parameter train step
    config.train_batch = 128
    config.train_widths = (1024, 2048, 2048, 2048, 10)
    config.seed = 0
    return config




# ----------------------------------------------------------------------------- machine rates


def _median_time(fn, *args, repeats: int = 5) -> float:
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def measure_machine() -> dict:
    """Measured f32 FLOP rate (2048^3 matmul) and memory bandwidth (256 MiB scaled in place).

    The bandwidth kernel donates its input, so it streams through memory that is already
    mapped, as an update that donates its state does; writing a fresh 256 MiB result each call
    instead measures the kernel's page faults (~1.5 GB/s on the 2-core dev box vs ~10 GB/s).
    """
    a = jnp.ones((2048, 2048), jnp.float32)
    seconds = _median_time(jax.jit(lambda x: x @ x), a)
    flop_rate = 2 * 2048**3 / seconds
    scale = jax.jit(lambda x: x * 1.0001, donate_argnums=0)
    b = scale(jnp.ones((64 * 1024 * 1024,), jnp.float32))
    times = []
    for _ in range(5):
        b = jax.block_until_ready(b)
        start = time.perf_counter()
        b = jax.block_until_ready(scale(b))
        times.append(time.perf_counter() - start)
    bandwidth = 2 * b.nbytes / float(np.median(times))  # read + write
    return {"flop_rate": flop_rate, "bandwidth": bandwidth,
            "device": str(jax.devices()[0].device_kind), "num_devices": jax.device_count()}


# ----------------------------------------------------------------------------- optimizers


def make_optimizer(name: str, num_steps: int):
    if name == "adam":
        return optax.adam(1e-3)
    if name == "sgd":
        return optax.sgd(1e-3)
    lopt = lo.get_lopt(name)
    return lopt.optimizer(lopt.init(jax.random.key(0)), num_steps=num_steps)


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
        compiled = update.lower(grads, state, params).compile()
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        state_bytes = tree_bytes(state)
        reads_params = _uses_params(tx, grads, state, params, loss)
        state, updates = update(grads, state, params)
        jax.block_until_ready((state, updates))
        runs[name] = {"update": update, "state": state, "times": [],
                      "flops": float(cost.get("flops", 0.0)),
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
    rows = []
    for name, run in runs.items():
        median = float(np.median(run["times"]))
        flop_time = run["flops"] / machine["flop_rate"]
        byte_time = run["min_bytes"] / machine["bandwidth"]
        roofline = max(flop_time, byte_time)
        rows.append({
            "optimizer": name, "num_params": int(num_params), "update_ms": 1e3 * median,
            "ratio_to_adam": median / adam,
            "state_bytes_per_param": run["state_bytes"] / num_params,
            "flops_per_param": run["flops"] / num_params,
            "min_bytes_per_param": run["min_bytes"] / num_params,
            "xla_bytes_per_param": run["xla_bytes"] / num_params,
            "roofline_flops_ms": 1e3 * flop_time, "roofline_bytes_ms": 1e3 * byte_time,
            "ratio_to_roofline": median / roofline,
            "bound": "compute" if flop_time > byte_time else "memory",
        })
    return rows


# ----------------------------------------------------------------------------- train step


def bench_train_step(config) -> list[dict]:
    """Forward + backward + update of an MLP classifier (~10.5M params at the default widths)."""
    key = jax.random.key(config.seed)
    widths = tuple(config.train_widths)
    pairs = zip(widths[:-1], widths[1:], strict=True)
    params = [{"w": jax.random.normal(jax.random.fold_in(key, i), (a, b)) / np.sqrt(a),
               "b": jnp.zeros((b,))} for i, (a, b) in enumerate(pairs)]
    num_params = sum(p.size for p in jax.tree.leaves(params))
    x = jax.random.normal(jax.random.fold_in(key, 100), (config.train_batch, widths[0]))
    y = jax.random.randint(jax.random.fold_in(key, 101), (config.train_batch,), 0, widths[-1])

    def loss_fn(params):
        h = x
        for layer in params[:-1]:
            h = jax.nn.relu(h @ layer["w"] + layer["b"])
        logits = h @ params[-1]["w"] + params[-1]["b"]
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    runs = {}
    for name in config.optimizers:
        tx = make_optimizer(name, config.num_steps)

        def step(params, state, tx=tx):
            loss, grads = jax.value_and_grad(loss_fn)(params)
            updates, state = tx.update(grads, state, params, value=loss)
            return optax.apply_updates(params, updates), state

        step = jax.jit(step, donate_argnums=(0, 1))
        carry = step(jax.tree.map(jnp.copy, params), tx.init(params))
        jax.block_until_ready(carry)
        runs[name] = {"step": step, "carry": carry, "times": []}
    for _ in range(config.repeats):
        for run in runs.values():
            start = time.perf_counter()
            run["carry"] = run["step"](*run["carry"])
            jax.block_until_ready(run["carry"])
            run["times"].append(time.perf_counter() - start)
    adam = float(np.median(runs["adam"]["times"]))
    return [{"optimizer": name, "num_params": int(num_params), "batch": config.train_batch,
             "step_ms": 1e3 * float(np.median(run["times"])),
             "ratio_to_adam": float(np.median(run["times"])) / adam}
            for name, run in runs.items()]


# ----------------------------------------------------------------------------- report


def format_report(machine: dict, update_rows: list[dict], train_rows: list[dict]) -> str:
    lines = [
        "# Learned optimizer update benchmark",
        "",
        f"Device: {machine['device']} x{machine['num_devices']}; measured FLOP rate "
        f"{machine['flop_rate'] / 1e9:.1f} GFLOP/s (2048^3 f32 matmul), memory bandwidth "
        f"{machine['bandwidth'] / 1e9:.1f} GB/s (256 MiB scaled in place, read + write).",
        "",
        "Roofline = max(FLOP time, byte time). FLOP time: the compiled update's FLOPs (XLA cost "
        "analysis: every elementwise op counts 1, a multiply-add 2) at the matmul rate. Byte "
        "time: the bytes the update must move (grads read; state read and written; updates "
        "written; params read when the update uses them) at the measured bandwidth. `bound` "
        "names the larger; `XLA B/param` is what the compiled program actually touches "
        "(XLA's bytes-accessed estimate), to compare with `min B/param`.",
        "",
        "| optimizer | params | update ms | x Adam | state B/param | FLOP/param | "
        "min B/param | XLA B/param | roofline FLOP ms | roofline bytes ms | x roofline (bound) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in update_rows:
        lines.append(
            f"| {r['optimizer']} | {r['num_params']:,} | {r['update_ms']:.2f} | "
            f"{r['ratio_to_adam']:.2f} | {r['state_bytes_per_param']:.1f} | "
            f"{r['flops_per_param']:.0f} | {r['min_bytes_per_param']:.0f} | "
            f"{r['xla_bytes_per_param']:.0f} | {r['roofline_flops_ms']:.2f} | "
            f"{r['roofline_bytes_ms']:.2f} | {r['ratio_to_roofline']:.2f} ({r['bound']}) |")
    if train_rows:
        lines += ["", f"Full train step (MLP classifier, {train_rows[0]['num_params']:,} params, "
                  f"batch {train_rows[0]['batch']}; params and state donated):", "",
                  "| optimizer | step ms | x Adam |", "|---|---|---|"]
        lines += [f"| {r['optimizer']} | {r['step_ms']:.1f} | {r['ratio_to_adam']:.2f} |"
                  for r in train_rows]
    return "\n".join(lines) + "\n"


def main(config, workdir):
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
    train_rows = bench_train_step(config) if config.train_step else []
    report = format_report(machine, update_rows, train_rows)
    print(report)
    results = {"machine": machine, "update": update_rows, "train_step": train_rows,
               "config": config.to_dict()}
    (workdir / "results.json").write_text(json.dumps(results, indent=2))
    (workdir / "report.md").write_text(report)
    if tracker is not None:
        for i, r in enumerate(update_rows):
            tracker.log_metrics(i, {f"{r['optimizer']}_{r['num_params']}_ratio_to_adam":
                                    r["ratio_to_adam"]})
        tracker.log_artifact(workdir / "results.json")
        tracker.log_artifact(workdir / "report.md")
        tracker.finish()


if __name__ == "__main__":
    cli.run(main, config_help="update benchmark config",
            default_config=default_config(), default_workdir="workdirs/bench_update")
