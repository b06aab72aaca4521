"""Logging overhead: a jitted train loop with tracking on (every N steps) vs off.

    python -m experiments.bench_tracking --workdir workdirs/bench_tracking \
        [--config.num_steps=2000 --config.log_every=10 --config.repeats=5 --config.hidden=256]

Both loops run the same compiled step (it always returns its metrics: loss and
`norm_metrics`); "off" never reads them, "on" passes them to a `MetricsBuffer`, which fetches
them in one `jax.device_get` every `log_every` steps and writes them through the trackers of
each variant ("local", "local+tensorboard", ...). Variants are interleaved within each repeat so
machine-load drift hits all alike. Reported per variant, as ratios to "off": median wall
time, minimum wall time (least disturbed by other load) and median process CPU time. Also
the host time of one log call measured in isolation (min of 3 x 300 calls), and the
overhead it implies at the measured step time, which load from other processes disturbs far
less than the loop A/B. All in `workdir/results.json`.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import optax

from experiments import tracking
from experiments.measure.outputs import write_outputs


def make_train_step(config):
    """A 2-layer MLP regression step with Adam; returns (step_fn, params, opt_state, batch)."""
    keys = jax.random.split(jax.random.key(config.seed), 4)
    params = {
        "w1": jax.random.normal(keys[0], (config.input_dim, config.hidden)) / config.input_dim**0.5,
        "w2": jax.random.normal(keys[1], (config.hidden, 1)) / config.hidden**0.5,
    }
    x = jax.random.normal(keys[2], (config.batch_size, config.input_dim))
    y = jnp.sin(x[:, :1]) + 0.1 * jax.random.normal(keys[3], (config.batch_size, 1))
    tx = optax.adam(1e-3)

    def loss_fn(params, x, y):
        return jnp.mean((jnp.tanh(x @ params["w1"]) @ params["w2"] - y) ** 2)

    @jax.jit
    def step_fn(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, opt_state = tx.update(grads, opt_state, params)
        metrics = {"loss": loss, **tracking.norm_metrics(grads, updates, params)}
        return optax.apply_updates(params, updates), opt_state, metrics

    return step_fn, params, tx.init(params), (x, y)


def run_loop(step_fn, params, opt_state, batch, num_steps, buffer=None) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) for `num_steps` steps, logging through `buffer`.

    CPU time (all threads of this process, XLA's included) is reported next to wall time
    because on a shared machine the wall time of a 1 s loop swings by tens of percent.
    """
    start, start_cpu = time.perf_counter(), time.process_time()
    for step in range(num_steps):
        params, opt_state, metrics = step_fn(params, opt_state, *batch)
        if buffer is not None:
            buffer.add(step, metrics)
    if buffer is not None:
        buffer.flush()
    jax.block_until_ready(params)
    return time.perf_counter() - start, time.process_time() - start_cpu


def host_seconds_per_log(step_fn, params, opt_state, batch, variant: str, workdir: Path,
                         num_logs: int = 300) -> float:
    """Host time of one log call (pack, fetch, write) on metrics already computed.

    Isolated from the training loop, so other load on the machine disturbs it far less than
    the A/B loop times; expected loop overhead ~= this / (log_every * step time).
    """
    _, _, metrics = step_fn(params, opt_state, *batch)
    jax.block_until_ready(metrics)
    tracker = tracking.start_run(workdir / "runs" / f"{variant}_per_log",
                                 backends=tuple(variant.split("+")), collect_env=False)
    buffer = tracking.MetricsBuffer(tracker, every=1)
    buffer.add(0, metrics)  # first row (synchronous) and compile of the packing function
    seconds = 0.0
    for step in range(1, num_logs + 1):
        time.sleep(0.002)  # in a loop, the lagged copy completes while later steps run
        start = time.perf_counter()
        buffer.add(step, metrics)
        seconds += time.perf_counter() - start
    buffer.flush()
    tracker.finish()
    return seconds / num_logs


def benchmark(config, workdir: Path) -> dict:
    step_fn, params, opt_state, batch = make_train_step(config)
    run_loop(step_fn, params, opt_state, batch, 3)  # compile once, outside every timing
    variants = ["off", *config.variants.split(",")]
    wall: dict[str, list[float]] = {v: [] for v in variants}
    cpu: dict[str, list[float]] = {v: [] for v in variants}
    for repeat in range(config.repeats):
        for variant in variants:
            buffer = tracker = None
            if variant != "off":
                tracker = tracking.start_run(workdir / "runs" / f"{variant}_r{repeat}",
                                             config=config, backends=tuple(variant.split("+")),
                                             collect_env=False)
                buffer = tracking.MetricsBuffer(tracker, config.log_every, config.num_steps)
            wall_s, cpu_s = run_loop(step_fn, params, opt_state, batch, config.num_steps, buffer)
            wall[variant].append(wall_s)
            cpu[variant].append(cpu_s)
            if tracker is not None:
                tracker.finish()  # outside the timing: closing files / the run is once per run
    median = {v: statistics.median(t) for v, t in wall.items()}
    per_log_us = {v: 1e6 * min(host_seconds_per_log(step_fn, params, opt_state, batch, v,
                                                    workdir) for _ in range(3))
                  for v in variants if v != "off"}
    step_s = min(wall["off"]) / config.num_steps
    return {
        "device": str(jax.devices()[0]), "backend": jax.default_backend(),
        "num_steps": config.num_steps, "log_every": config.log_every, "repeats": config.repeats,
        "metrics_per_log": 1 + len(tracking.norm_metrics(params, params, params)),
        "median_wall_s": median,
        "ratio_to_off_median_wall": {v: median[v] / median["off"] for v in variants},
        "ratio_to_off_min_wall": {v: min(wall[v]) / min(wall["off"]) for v in variants},
        "ratio_to_off_median_cpu": {v: statistics.median(cpu[v]) / statistics.median(cpu["off"])
                                    for v in variants},
        "step_ms_off_median": 1000 * median["off"] / config.num_steps,
        "host_us_per_log_min_of_3": per_log_us,
        "expected_overhead_from_per_log_cost": {
            v: us * 1e-6 / (config.log_every * step_s) for v, us in per_log_us.items()},
        "wall_s": wall, "cpu_s": cpu,
    }


def run(config, workdir) -> dict:
    """Measure every variant; write results.json into `workdir` (tracked); return results."""
    workdir = Path(workdir)
    tracker = tracking.start_run(workdir, config=config)
    results = benchmark(config, workdir)
    tracker.log_params({"results": {k: v for k, v in results.items()
                                    if k not in ("wall_s", "cpu_s")}})
    write_outputs(workdir, results, tracker=tracker)
    return results


def format_summary(results: dict) -> str:
    """The printed summary: ratios to "off" per variant and the per-log host cost."""
    lines = [f"{'variant':>28} | median wall s | ratio: median wall | min wall | median cpu"]
    for variant in results["median_wall_s"]:
        lines.append(f"{variant:>28} | {results['median_wall_s'][variant]:13.3f} | "
                     f"{results['ratio_to_off_median_wall'][variant]:17.3f} | "
                     f"{results['ratio_to_off_min_wall'][variant]:8.3f} | "
                     f"{results['ratio_to_off_median_cpu'][variant]:10.3f}")
    for variant, us in results["host_us_per_log_min_of_3"].items():
        lines.append(f"{variant:>28}: {us:.0f} us host time per log call -> expected overhead "
                     f"{results['expected_overhead_from_per_log_cost'][variant]:.1%} at this "
                     "step time")
    lines.append(f"step time (off, median): {results['step_ms_off_median']:.3f} ms on "
                 f"{results['device']}; {results['metrics_per_log']} metrics per log")
    return "\n".join(lines)
