"""Long-horizon stability of a learned optimizer: train far past its meta-training horizons.

Trains `config.task` for `config.num_steps` steps (default 20k: 10x norm_mlp_mix's longest
meta-training horizon of 2000) with a pretrained optimizer at its card's default learning rate
(or `config.learning_rate`), beside Adam at the same learning rate and schedule
(`config.schedule`: constant, or warmup_cosine: a linear warmup over `warmup_fraction` of the
steps to the learning rate, then a cosine to 0 at the last step), on `config.num_seeds` seeds,
and reports whether it ever diverged: a non-finite loss, or a smoothed training loss that climbs
above `blowup_factor` x its running minimum (late-training blow-up; the minimum floored at
`floor_fraction` of the initial loss, see `verdict`).

    python -m experiments.meta_stability --config experiments/configs/meta_stability.py \
        --workdir workdirs/norm_mlp_stability --config.pretrained=norm_mlp_mix \
        [--config.schedule=warmup_cosine]

The workdir gets results.json (smoothed curves every `log_every` steps, per-seed verdicts) and
report.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import optax

import learned_opt as lo
import models
from experiments import cli
from experiments.benchmarking import baselines
from learned_opt import training


def curve(task, tx, seed: int, num_steps: int) -> np.ndarray:
    """Per-step training losses of `tx` on `task` (one compiled scan)."""

    run = jax.jit(lambda key: training.train_loss_curve(task, tx, key, num_steps))
    return np.asarray(run(jax.random.key(seed)))


def verdict(losses: np.ndarray, window: int, blowup_factor: float,
            floor_fraction: float = 1e-3) -> dict:
    """Smoothed curve, running minimum and the divergence verdict of one run.

    Diverged: a non-finite loss, or a smoothed loss above `blowup_factor` x max(running min,
    floor), floor = `floor_fraction` x the initial smoothed loss. The floor keeps the ratio
    meaningful once a run has converged: a loss that reached exactly 0 (float32 cross-entropy
    of saturated logits) would otherwise make any later positive loss an infinite blow-up.
    """
    finite = bool(np.all(np.isfinite(losses)))
    n = len(losses) // window
    smooth = losses[: n * window].reshape(n, window).mean(axis=1)
    running_min = np.minimum.accumulate(np.where(np.isfinite(smooth), smooth, np.inf))
    floor = max(floor_fraction * float(smooth[0]), 1e-12)
    worst = float(np.max(smooth / np.maximum(running_min, floor))) if finite else float("inf")
    return {"finite": finite, "max_smoothed_over_running_min": worst, "floor": floor,
            "diverged": (not finite) or worst > blowup_factor,
            "initial": float(smooth[0]), "final": float(smooth[-1]),
            "min": float(running_min[-1]), "smoothed": [float(x) for x in smooth]}


def main(config, workdir):
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    lopt, theta, card = lo.load_pretrained_theta(config.pretrained)
    learning_rate = config.learning_rate or card.get("learning_rate")
    schedule_name = config.get("schedule", "constant")
    if schedule_name not in baselines.SCHEDULES:
        raise ValueError(f"unknown schedule {schedule_name!r}; valid choices: "
                         f"{list(baselines.SCHEDULES)}")
    rate = baselines.Schedule(schedule_name, config.num_steps,
                              config.get("warmup_fraction", 0.05))(learning_rate)
    task = models.get_task(config.task, **config.task_kwargs.to_dict())
    runs = {"learned": lopt.optimizer(theta, learning_rate=rate), "adam": optax.adam(rate)}
    results = {"pretrained": config.pretrained, "task": config.task,
               "task_kwargs": config.task_kwargs.to_dict(), "num_steps": config.num_steps,
               "learning_rate": learning_rate, "schedule": schedule_name,
               "window": config.log_every,
               "blowup_factor": config.blowup_factor, "runs": {}}
    for name, tx in runs.items():
        results["runs"][name] = [verdict(curve(task, tx, seed, config.num_steps),
                                         config.log_every, config.blowup_factor,
                                         config.get("floor_fraction", 1e-3))
                                 for seed in range(config.num_seeds)]
    (workdir / "results.json").write_text(json.dumps(results, indent=1))
    lines = [f"# Stability over {config.num_steps} steps: {config.pretrained} on {config.task} "
             f"{config.task_kwargs.to_dict()}", "",
             f"learning rate {learning_rate:g}, {schedule_name} (both); "
             f"smoothed over {config.log_every} steps; "
             f"diverged = non-finite or smoothed loss > {config.blowup_factor}x max(its running "
             f"min, {config.get('floor_fraction', 1e-3):g} x its initial loss)",
             "", "| optimizer | seed | initial | min | final | max/max(running-min, floor) | "
             "diverged |",
             "|---|---|---|---|---|---|---|"]
    for name, verdicts in results["runs"].items():
        for seed, v in enumerate(verdicts):
            lines.append(f"| {name} | {seed} | {v['initial']:.4f} | {v['min']:.4g} | "
                         f"{v['final']:.4g} | {v['max_smoothed_over_running_min']:.3g} | "
                         f"{v['diverged']} |")
    (workdir / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    cli.run(main, config_help="stability-check config file")
