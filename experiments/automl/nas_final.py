"""The found architecture against the zoo's default: test accuracy with bootstrap intervals,
parameters and milliseconds per training step, from separate final runs.

    row = final_row("mlp", "digits", arch, label="found", num_steps=2000, eval_every=500,
                    seeds=(10, 11, 12), learning_rate=3e-3)
    row["test_accuracy"], row["accuracy_ci"], row["num_params"], row["ms_per_step"]

Training reads "train" (and "valid" for its curve); "test" is read once, from the final
parameters, here. The interval is scipy.stats.bootstrap's 95% BCa interval of the mean over
test examples of each example's accuracy averaged over the final seeds.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments.automl import nas_space
from learned_opt import training as train_loop


def ms_per_step(task, learning_rate: float, repeats: int = 20) -> float:
    """Median wall time of one jitted Adam training step (one seed), in milliseconds."""
    tx = optax.adam(learning_rate)

    @jax.jit
    def step(params, state, key):
        loss, grads = jax.value_and_grad(task.loss)(params, task.sample_batch(key, "train"))
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    params = task.init(jax.random.key(0))
    state = tx.init(params)
    jax.block_until_ready(step(params, state, jax.random.key(1)))
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        params, state, _ = jax.block_until_ready(step(params, state, jax.random.key(i)))
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)


def bootstrap_interval(per_example: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """95% bootstrap interval of the mean of `per_example` (scipy.stats.bootstrap)."""
    from scipy.stats import bootstrap

    if np.ptp(per_example) == 0:  # every example scored alike: the interval is a point
        value = float(per_example[0])
        return value, value
    result = bootstrap((per_example,), np.mean, confidence_level=0.95, n_resamples=2000,
                       rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def final_row(family: str, dataset: str, arch, *, label: str, num_steps: int, eval_every: int,
              seeds: Sequence[int], learning_rate: float, batch_size: int = 64) -> dict[str, Any]:
    """Train `arch` on fresh seeds and measure it (see the module docstring)."""
    task = nas_space.build_task(family, dataset, arch, batch_size=batch_size)
    run = train_loop.make_run_fn(task, lambda lr: optax.adam(lr), num_steps=num_steps,
                                 eval_every=eval_every, eval_splits=("valid",),
                                 full_split_eval=True, keep_snapshots=True)
    keys = train_loop.seed_keys(list(seeds))
    curves = run(jnp.float32(learning_rate), keys)
    final_params = jax.tree.map(lambda x: x[:, -1], curves.snapshots)
    test = task.full_split("test")
    logits = jax.vmap(lambda p: task.net.apply(p, test["x"]))(final_params)
    correct = np.asarray(jnp.argmax(logits, axis=-1) == test["y"][None], dtype=np.float64)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(log_probs, test["y"][None, :, None], axis=-1)[..., 0]
    per_example = correct.mean(axis=0)
    valid = np.asarray(jax.device_get(curves.evals["valid"]["loss"]))[:, -1]
    return {"label": label, "arch": {k: list(v) if isinstance(v, tuple) else v
                                     for k, v in dict(arch).items()},
            "test_accuracy": float(per_example.mean()),
            "accuracy_ci": list(bootstrap_interval(per_example)),
            "test_loss": float(jnp.mean(nll)), "valid_loss": float(valid.mean()),
            "num_params": train_loop.num_parameters(task),
            "ms_per_step": ms_per_step(task, learning_rate), "seeds": list(seeds),
            "num_steps": num_steps}
