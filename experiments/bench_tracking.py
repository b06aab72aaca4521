"""Logging overhead: a jitted train loop with tracking on (every N steps) vs off.

    python -m experiments.bench_tracking --workdir workdirs/bench_tracking \
        [--config.num_steps=2000 --config.log_every=10 --config.repeats=5 --config.hidden=256]

Both loops run the same compiled step (it always returns its metrics: loss and
`norm_metrics`); "off" never reads them, "on" passes them to a `MetricsBuffer`, which fetches
them in one `jax.device_get` every `log_every` steps and writes them through the trackers of
each variant ("local", "local+tensorboard", ...). Variants are interleaved within each repeat so
machine-load drift hits all alike; the result is the median wall time per variant and its ratio
to "off", written to `workdir/results.json`.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import optax
from absl import app, flags
from ml_collections import config_flags

from experiments import tracking


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.num_steps = 2000
    config.log_every = 10
    config.repeats = 5
    config.batch_size = 128
    config.input_dim = 64
    config.hidden = 256
    config.variants = "local,local+tensorboard,local+tensorboard+mlflow"
    config.seed = 0
    return config


_CONFIG = config_flags.DEFINE_config_dict("config", get_config())
_WORKDIR = flags.DEFINE_string("workdir", "workdirs/bench_tracking", "output directory")


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


def run_loop(step_fn, params, opt_state, batch, num_steps, buffer=None) -> float:
    """Wall seconds for `num_steps` steps (all work finished), logging through `buffer`."""
    start = time.perf_counter()
    for step in range(num_steps):
        params, opt_state, metrics = step_fn(params, opt_state, *batch)
        if buffer is not None:
            buffer.add(step, metrics)
    jax.block_until_ready(params)
    return time.perf_counter() - start


def benchmark(config, workdir: Path) -> dict:
    step_fn, params, opt_state, batch = make_train_step(config)
    run_loop(step_fn, params, opt_state, batch, 3)  # compile once, outside every timing
    variants = ["off", *config.variants.split(",")]
    times: dict[str, list[float]] = {v: [] for v in variants}
    for repeat in range(config.repeats):
        for variant in variants:
            if variant == "off":
                times[variant].append(run_loop(step_fn, params, opt_state, batch,
                                               config.num_steps))
                continue
            tracker = tracking.start_run(workdir / "runs" / f"{variant}_r{repeat}",
                                         config=config, backends=tuple(variant.split("+")),
                                         collect_env=False)
            buffer = tracking.MetricsBuffer(tracker, config.log_every, config.num_steps)
            times[variant].append(run_loop(step_fn, params, opt_state, batch,
                                           config.num_steps, buffer))
            tracker.finish()  # outside the timing: closing files / the MLflow run is once per run
    off = statistics.median(times["off"])
    return {
        "device": str(jax.devices()[0]), "backend": jax.default_backend(),
        "num_steps": config.num_steps, "log_every": config.log_every, "repeats": config.repeats,
        "metrics_per_log": 1 + len(tracking.norm_metrics(params, params, params)),
        "median_s": {v: statistics.median(t) for v, t in times.items()},
        "ratio_to_off": {v: statistics.median(t) / off for v, t in times.items()},
        "step_ms_off": 1000 * off / config.num_steps,
        "all_s": times,
    }


def main(argv):
    del argv
    config = _CONFIG.value
    workdir = Path(_WORKDIR.value)
    tracker = tracking.start_run(workdir, config=config)
    results = benchmark(config, workdir)
    (workdir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    tracker.log_params({"results": {k: v for k, v in results.items() if k != "all_s"}})
    tracker.finish()
    for variant, ratio in results["ratio_to_off"].items():
        print(f"{variant:>30}: median {results['median_s'][variant]:.3f} s, "
              f"ratio to off {ratio:.3f}")
    print(f"step time (off): {results['step_ms_off']:.3f} ms on {results['device']}")


if __name__ == "__main__":
    app.run(main)
