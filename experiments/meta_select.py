"""Checkpoint (and default learning-rate) selection on an OOD selection set.

Scores every theta snapshot a meta-training run saved (`snapshots/step_*.json`, see
`config.snapshot_every` of experiments/configs/meta_base.py) and its final card on tasks that
are neither in the meta-training mixture nor in the benchmark suites, then picks the best
snapshot and, for it, the best default learning rate from a small grid:

    python -m experiments.meta_select --config experiments/configs/meta_select.py \
        --workdir workdirs/norm_mlp_select --config.run=workdirs/norm_mlp_mix

Score of one (theta, learning rate): the mean over selection tasks and seeds of
log(final train loss / Adam(1e-3)'s final train loss on the same task and seed), where the
final loss is the mean of the last `window` steps' training losses (a diverged run scores
log(initial loss / Adam's) + 5). Lower is better; 0 ties Adam(1e-3). Only training losses
and the selection tasks are read: nothing of the benchmark's tasks, and no test split.
Every run, Adam's included, follows `config.schedule` (constant, or the benchmark's
warmup_cosine with the learning rate as its peak: how a tuned learned optimizer is run there).
With `config.include_untrained`, the architecture's untrained default theta
(`lopt.init(key(config.untrained_seed))`) is a candidate too: when no snapshot beats it, the
selection says so. The workdir gets `results.json` (every score) and `report.md`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

import learned_opt as lo
import models
from experiments import cli
from experiments.benchmarking import baselines
from learned_opt import training

DIVERGED_PENALTY = 5.0


def selection_tasks(config) -> list[tuple[str, object]]:
    """(name, task) of the selection set: `config.selection_family`'s held-out tasks."""
    tasks = models.heldout_tasks(config.selection_family, config.num_tasks,
                                 seed=config.task_seed)
    return [(f"{config.selection_family}/heldout{i}:{task.name}", task)
            for i, task in enumerate(tasks)]


def train_curve_fn(task, make_tx, num_steps: int):
    """jit(fn(tx_args, seed) -> per-step train losses) for one task."""

    def fn(tx_args, seed):
        key = jax.random.fold_in(jax.random.key(1234), seed)
        return training.train_loss_curve(task, make_tx(tx_args), key, num_steps)

    return jax.jit(fn)


def final_loss(losses: np.ndarray, window: int) -> float:
    tail = losses[-window:]
    if not np.all(np.isfinite(tail)):
        return math.inf
    return float(np.mean(tail))


def score(losses: np.ndarray, reference: float, window: int) -> float:
    value = final_loss(losses, window)
    if not math.isfinite(value):
        return math.log(max(float(losses[0]), 1e-12) / reference) + DIVERGED_PENALTY
    return math.log(max(value, 1e-12) / reference)


UNTRAINED = "untrained default"


def candidates(run_dir: Path) -> list[Path]:
    """Snapshot cards of a run, by step, then the final card(s) at the top of the run dir."""
    snaps = sorted((run_dir / "snapshots").glob("step_*.json"))
    names = {card["name"] for card in lo.list_pretrained(run_dir)}
    finals = [run_dir / f"{name}.json" for name in sorted(names)]
    return snaps + finals


def load_candidate(candidate: str, lopt, seed: int):
    """(lopt, theta, card) of a card path, or of the untrained default (`UNTRAINED`)."""
    if candidate == UNTRAINED:
        return lopt, lopt.init(jax.random.key(seed)), {"outer_steps": 0}
    return lo.load_pretrained_theta(candidate)


def main(config, workdir):
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    run_dir = Path(config.run)
    cards = candidates(run_dir)
    if config.stride > 1:  # every stride-th snapshot, always the latest one
        snaps = [c for c in cards if c.parent.name == "snapshots"]
        kept = set(snaps[::-1][::config.stride])
        cards = [c for c in cards if c.parent.name != "snapshots" or c in kept]
    if not cards:
        raise ValueError(f"config.run={config.run!r} holds no snapshots/step_*.json and no card")
    lopt, _, _ = lo.load_pretrained_theta(cards[0])
    untrained_seed = config.get("untrained_seed", 0)
    if config.get("include_untrained", False):
        cards = [UNTRAINED, *cards]
    schedule_name = config.get("schedule", "constant")
    if schedule_name not in baselines.SCHEDULES:
        raise ValueError(f"unknown schedule {schedule_name!r}; valid choices: "
                         f"{list(baselines.SCHEDULES)}")
    schedule = baselines.Schedule(schedule_name, config.num_steps,
                                  config.get("warmup_fraction", 0.05))
    tasks = selection_tasks(config)
    seeds = list(range(config.num_seeds))
    learning_rates = [float(x) for x in cli.names(config.learning_rates)]
    adam_fns = {name: train_curve_fn(t, lambda a: optax.adam(schedule(a["lr"])),
                                     config.num_steps) for name, t in tasks}
    lopt_fns = {name: train_curve_fn(t, lambda a: lopt.optimizer(
        a["theta"], learning_rate=schedule(a["lr"])), config.num_steps) for name, t in tasks}
    reference = {(name, s): final_loss(np.asarray(adam_fns[name]({"lr": jnp.float32(1e-3)}, s)),
                                       config.window)
                 for name, _ in tasks for s in seeds}

    def evaluate(theta, lr):
        per_task = {}
        for name, _ in tasks:
            per_task[name] = float(np.mean([score(np.asarray(lopt_fns[name](
                {"theta": theta, "lr": jnp.float32(lr)}, s)), reference[(name, s)],
                config.window) for s in seeds]))
        return float(np.mean(list(per_task.values()))), per_task

    rows = []
    base_lr = learning_rates[len(learning_rates) // 2]
    for card_path in cards:
        step_lopt, theta, card = load_candidate(card_path, lopt, untrained_seed)
        if step_lopt != lopt:
            continue
        mean, per_task = evaluate(theta, base_lr)
        rows.append({"card": str(card_path), "outer_steps": card.get("outer_steps"),
                     "learning_rate": base_lr, "score": mean, "per_task": per_task})
        print(f"{Path(card_path).name}: score {mean:+.4f} at lr {base_lr:g}", flush=True)
    best = min(rows, key=lambda r: r["score"])
    _, theta, _ = load_candidate(best["card"], lopt, untrained_seed)
    lr_rows = []
    for lr in learning_rates:
        mean, per_task = evaluate(theta, lr)
        lr_rows.append({"learning_rate": lr, "score": mean, "per_task": per_task})
        print(f"best snapshot at lr {lr:g}: score {mean:+.4f}", flush=True)
    best_lr = min(lr_rows, key=lambda r: r["score"])
    # Reference points: Adam over the same grid (how far a tuned Adam gets on this set).
    adam_rows = []
    for lr in learning_rates:
        scores = [score(np.asarray(adam_fns[name]({"lr": jnp.float32(lr)}, s)),
                        reference[(name, s)], config.window) for name, _ in tasks for s in seeds]
        adam_rows.append({"learning_rate": lr, "score": float(np.mean(scores))})
    results = {"run": str(run_dir), "tasks": [n for n, _ in tasks], "seeds": seeds,
               "num_steps": config.num_steps, "window": config.window,
               "schedule": schedule_name,
               "score": "mean log(final train loss / Adam(1e-3) final train loss)",
               "snapshots": rows, "selected": best, "learning_rate_grid": lr_rows,
               "selected_learning_rate": best_lr["learning_rate"], "adam_grid": adam_rows}
    (workdir / "results.json").write_text(json.dumps(results, indent=1))
    lines = ["# Checkpoint selection on the OOD selection set", "",
             f"Run {run_dir}; tasks {results['tasks']}; seeds {seeds}; {config.num_steps} "
             f"steps; {schedule_name} schedule; score = {results['score']} (lower is better, "
             "0 = Adam(1e-3)).", "",
             "| snapshot | outer steps | lr | score |", "|---|---|---|---|"]
    lines += [f"| {Path(r['card']).name} | {r['outer_steps']} | {r['learning_rate']:g} | "
              f"{r['score']:+.4f} |" for r in rows]
    lines += ["", f"Selected: {Path(best['card']).name}", "", "| lr | selected score | "
              "Adam score |", "|---|---|---|"]
    lines += [f"| {a['learning_rate']:g} | {b['score']:+.4f} | {a['score']:+.4f} |"
              for a, b in zip(adam_rows, lr_rows, strict=True)]
    lines += ["", f"Selected default learning rate: {best_lr['learning_rate']:g}"]
    (workdir / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    cli.run(main, config_help="checkpoint-selection config file")
