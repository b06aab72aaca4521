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
and the full train step (forward + backward + update, params and state donated) of ~10M-parameter
models, as ratios to Adam's step on the same model and batch:
  * the MLP classifier (10.5M params) at a sweep of batch sizes (`train_batches`, default 128,
    512, 2048). Batch 128 is the worst case for a per-parameter optimizer: forward + backward
    do only ~6 * 128 FLOPs per parameter, so the update's FLOPs weigh most;
  * the zoo's causal Transformer LM (`text_transformer`, 10.7M params in nanoGPT's
    shakespeare-char shape: 6 layers, d_model 384, 6 heads, 97-character vocabulary) at 16
    sequences x 128 tokens. A language model reuses each weight at every token, so forward +
    backward do ~6 * 2048 FLOPs per parameter (nanoGPT trains this shape at 64 x 256);
each with XLA's FLOPs of forward + backward and of the update on that model, so the reader sees
why a ratio is what it is, and whether AdafacMLPLOpt meets the issue's target (<= 1.3x Adam).
On the 2-core dev CPU it does from MLP batch 512 and on the Transformer LM (FLOP ratio ~1.03)
but not on the MLP at batch 128 (~1.9x): there the update's ~3.9 GFLOP (368 FLOP/param) meet
only ~7.5 GFLOP of forward + backward, so even an update at the matmul rate would give ~1.5x.

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

import functools
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

TRAIN_STEP_TARGET = 1.3  # issue 3: AdafacMLPLOpt's full train step <= 1.3x Adam's


def default_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.sizes = (1_000_000, 10_000_000)  # parameter counts of the three-layer stacks
    config.optimizers = ("adam", "sgd", *lo.list_lopts())
    config.repeats = 15                      # timed rounds (medians reported)
    config.num_steps = 1000                  # horizon given to optimizers that need one
    config.train_step = True                 # also time full train steps of ~10M-param models
    config.train_batches = (128, 512, 2048)  # batch sweep of the MLP classifier
    config.train_widths = (1024, 2048, 2048, 2048, 10)
    config.train_transformer = True          # the zoo's Transformer LM at config.transformer
    # nanoGPT's shakespeare-char model shape (10.7M params, character vocabulary), at 16 x 128
    # tokens per step (nanoGPT trains it on 64 x 256; 2048 tokens keeps a step ~1 s on 2 cores).
    config.transformer = ml_collections.ConfigDict(dict(
        seq_len=128, d_model=384, num_heads=6, num_layers=6, batch_size=16))
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


def _transcendental_rate(size: int = 1 << 21, depth: int = 32) -> float:
    """tanh evaluations per second in a compute-bound loop (`depth` independent tanh per entry,
    summed, so throughput and not latency is measured).

    XLA's cost analysis counts each transcendental (exp, log, tanh, ...) once, apart from the
    FLOPs, but on CPU each is a polynomial and a divide: tens of FLOPs that the matmul rate
    does not account for.
    """
    def many(x):
        return sum(jnp.tanh(x * (1.0 + 0.01 * i)) for i in range(depth))

    seconds = _median_time(jax.jit(many), jnp.linspace(-3.0, 3.0, size, dtype=jnp.float32))
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
    cost = compiled.cost_analysis()
    flops = float((cost[0] if isinstance(cost, list) else cost).get("flops", 0.0))
    return flops / _median_time(compiled, theta, xs)


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
            "transcendental_rate": _transcendental_rate(),
            "per_entry_mlp_flop_rate": _per_entry_mlp_rate(),
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
    rows = []
    for name, run in runs.items():
        median = float(np.median(run["times"]))
        flop_time = run["flops"] / machine["flop_rate"]
        byte_time = run["min_bytes"] / machine["bandwidth"]
        roofline = max(flop_time, byte_time)
        transc_time = run["transcendentals"] / machine["transcendental_rate"]
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
            "transcendentals_per_param": run["transcendentals"] / num_params,
            "roofline_transcendentals_ms": 1e3 * transc_time,
            # compute time counting the transcendentals at their own measured rate
            "ratio_to_roofline_with_transcendentals":
                median / max(flop_time + transc_time, byte_time),
        })
    return rows


# ----------------------------------------------------------------------------- train step


def mlp_model(config, batch: int, key: jax.Array) -> dict:
    """The MLP classifier (~10.5M params at the default widths) on one random batch."""
    widths = tuple(config.train_widths)
    pairs = zip(widths[:-1], widths[1:], strict=True)
    params = [{"w": jax.random.normal(jax.random.fold_in(key, i), (a, b)) / np.sqrt(a),
               "b": jnp.zeros((b,))} for i, (a, b) in enumerate(pairs)]
    data = {"x": jax.random.normal(jax.random.fold_in(key, 100), (batch, widths[0])),
            "y": jax.random.randint(jax.random.fold_in(key, 101), (batch,), 0, widths[-1])}

    def loss_fn(params, data):
        h = data["x"]
        for layer in params[:-1]:
            h = jax.nn.relu(h @ layer["w"] + layer["b"])
        logits = h @ params[-1]["w"] + params[-1]["b"]
        return optax.softmax_cross_entropy_with_integer_labels(logits, data["y"]).mean()

    return {"model": "mlp", "batch": f"{batch}", "examples": batch,
            "params": params, "data": data, "loss_fn": loss_fn}


def transformer_model(config, key: jax.Array) -> dict:
    """The zoo's causal Transformer LM (`text_transformer`) sized by `config.transformer`, on
    one batch of its character corpus, through the task's public init / sample_batch / loss."""
    from models import registry  # experiments -> models is an allowed arrow

    overrides = config.transformer.to_dict()
    task = registry.get_task("text_transformer", **overrides)
    params = task.init(key)
    data = task.sample_batch(jax.random.fold_in(key, 1), "train")
    batch, seq_len = overrides["batch_size"], overrides["seq_len"]
    return {"model": "transformer", "batch": f"{batch}x{seq_len}", "examples": batch * seq_len,
            "params": params, "data": data, "loss_fn": task.loss}


def _flops(compiled) -> float:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost.get("flops", 0.0))


def bench_train_step(config, model: dict) -> list[dict]:
    """Forward + backward + update of `model` for every optimizer, round-robin timed.

    FLOPs (XLA cost analysis): forward + backward compiled alone; the update's as the step's
    minus those. When both run compute bound, the step's ratio to Adam approaches
    (fwd_bwd + update) / (fwd_bwd + adam_update).
    """
    params, data, loss_fn = model["params"], model["data"], model["loss_fn"]
    num_params = sum(p.size for p in jax.tree.leaves(params))
    grad_fn = jax.value_and_grad(loss_fn)
    fwd_bwd_flops = _flops(jax.jit(grad_fn).lower(params, data).compile())
    runs = {}
    for name in config.optimizers:
        tx = make_optimizer(name, config.num_steps)
        state = tx.init(params)

        def step(params, state, data, tx=tx):
            loss, grads = grad_fn(params, data)
            updates, state = tx.update(grads, state, params, value=loss)
            return optax.apply_updates(params, updates), state

        step = jax.jit(step, donate_argnums=(0, 1))
        carry = (jax.tree.map(jnp.copy, params), state)
        compiled = step.lower(*carry, data).compile()
        carry = compiled(*carry, data)
        jax.block_until_ready(carry)
        # The step's FLOPs minus forward + backward: the update and apply_updates (1 FLOP/param).
        runs[name] = {"step": compiled, "carry": carry, "times": [],
                      "update_flops": _flops(compiled) - fwd_bwd_flops}
    for _ in range(config.repeats):  # round-robin, as the update timings
        for run in runs.values():
            start = time.perf_counter()
            run["carry"] = run["step"](*run["carry"], data)
            jax.block_until_ready(run["carry"])
            run["times"].append(time.perf_counter() - start)
    adam = runs["adam"] if "adam" in runs else None
    adam_ms = float(np.median(adam["times"])) if adam else float("nan")
    adam_flops = fwd_bwd_flops + adam["update_flops"] if adam else float("nan")
    rows = []
    for name, run in runs.items():
        median = float(np.median(run["times"]))
        rows.append({
            "model": model["model"], "batch": model["batch"], "optimizer": name,
            "num_params": int(num_params), "step_ms": 1e3 * median,
            "ratio_to_adam": median / adam_ms,
            "fwd_bwd_gflop": fwd_bwd_flops / 1e9,
            "fwd_bwd_flops_per_param": fwd_bwd_flops / num_params,
            "update_gflop": run["update_flops"] / 1e9,
            # the ratio if the step ran at one FLOP rate throughout
            "flop_ratio_to_adam": (fwd_bwd_flops + run["update_flops"]) / adam_flops,
        })
        print(json.dumps(rows[-1]))
    del runs
    return rows


def train_models(config) -> list[dict]:
    key = jax.random.key(config.seed)
    models = [functools.partial(mlp_model, config, int(b), key) for b in config.train_batches]
    if config.train_transformer:
        models.append(functools.partial(transformer_model, config, key))
    return models


# ----------------------------------------------------------------------------- report


def target_summary(train_rows: list[dict], optimizer: str = "adafac_mlp",
                   target: float = TRAIN_STEP_TARGET) -> str:
    """Which model / batch meets the issue's train-step target (`optimizer` <= target x Adam)."""
    rows = [r for r in train_rows if r["optimizer"] == optimizer]
    met = [f"{r['model']} {r['batch']} ({r['ratio_to_adam']:.2f}x)" for r in rows
           if r["ratio_to_adam"] <= target]
    missed = [f"{r['model']} {r['batch']} ({r['ratio_to_adam']:.2f}x)" for r in rows
              if r["ratio_to_adam"] > target]
    return (f"Target `{optimizer}` train step <= {target}x Adam: met on "
            f"{', '.join(met) or 'none'}; missed on {', '.join(missed) or 'none'}.")


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
        lines += [
            "", "Full train step (forward + backward + update, params and state donated) of "
            "~10M-parameter models; `x Adam` is against Adam's step on the same model and batch "
            "in the same round-robin. `fwd+bwd GFLOP` is XLA's cost analysis of forward + "
            "backward alone (FLOP per parameter per step in brackets); `update GFLOP` the "
            "step's minus those (the update and apply_updates); `FLOP x Adam` = (fwd+bwd + update "
            "FLOPs) / (fwd+bwd + Adam's update FLOPs), the ratio if the whole step ran at one "
            "FLOP rate. A batch `BxL` is B sequences of L tokens.", "",
            "| model | batch | params | fwd+bwd GFLOP (/param) | optimizer | update GFLOP | "
            "step ms | x Adam | FLOP x Adam |",
            "|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r['model']} | {r['batch']} | {r['num_params']:,} | "
                  f"{r['fwd_bwd_gflop']:.1f} ({r['fwd_bwd_flops_per_param']:.0f}) | "
                  f"{r['optimizer']} | {r['update_gflop']:.2f} | {r['step_ms']:.1f} | "
                  f"{r['ratio_to_adam']:.2f} | {r['flop_ratio_to_adam']:.2f} |"
                  for r in train_rows]
        lines += ["", target_summary(train_rows)]
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
    train_rows = []
    if config.train_step:
        for make_model in train_models(config):
            train_rows += bench_train_step(config, make_model())
    report = format_report(machine, update_rows, train_rows)
    print(report)
    results = {"machine": machine, "update": update_rows, "train_step": train_rows,
               "train_step_target": target_summary(train_rows) if train_rows else None,
               "config": config.to_dict()}
    (workdir / "results.json").write_text(json.dumps(results, indent=2))
    (workdir / "report.md").write_text(report)
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


if __name__ == "__main__":
    cli.run(main, config_help="update benchmark config",
            default_config=default_config(), default_workdir="workdirs/bench_update")
