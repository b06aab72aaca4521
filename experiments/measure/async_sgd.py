"""Sync vs async SGD, measured: `python -m experiments.parallelism --config.mode=async`.

All runs train the same zoo task from the same init with plain SGD at one learning rate; one
simulated second is one worker's mean time per gradient (log-normal jitter on every gradient).

- sync: `sync_workers` workers, every step averages their gradients (batch `workers x b`) and
  waits for the slowest; "sync_straggler" makes one of them `straggler_slowdown` times slower;
  "sync_scaled_lr" uses the linear scaling rule's lr (x workers, `parallel.large_batch`), since
  its batch is `workers` times larger than an async update's.
- async_N: N workers push single-worker gradients (batch b) to a parameter server as they
  finish (`parallel.async_sgd.worker_schedule`): N times more updates per second, each about
  N - 1 versions stale; "_inverse" divides each update by its staleness.
- async_straggler: `sync_workers` async workers with the same straggler.
- fixed staleness tau: loss against updates only, the pure effect of staleness.

Every run is cut at the same simulated wall-clock budget; the loss is the validation loss of the
server's params after every update. Writes report.md, async_loss.png, async_staleness.png.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np
import optax

from experiments.measure.tables import records_table
from parallel import async_sgd, large_batch


def _batches(task, key, num_updates):
    return jax.vmap(lambda k: task.sample_batch(k, "train"))(jax.random.split(key, num_updates))


def _cut(schedule: async_sgd.Schedule, budget: float) -> async_sgd.Schedule:
    keep = int(np.searchsorted(schedule.wall_clock, budget, side="right"))
    return async_sgd.Schedule(*(np.asarray(a)[:keep] for a in schedule))


def _summary(name, schedule, losses, batch_per_update, initial_loss, target):
    losses = np.asarray(losses, np.float64)
    finite = np.isfinite(losses)
    reached = np.flatnonzero(finite & (losses <= target))
    return {
        "config": name,
        "updates": len(losses),
        "examples": int(len(losses) * batch_per_update),
        "mean_staleness": float(np.mean(schedule.staleness)) if len(losses) else 0.0,
        "max_staleness": int(np.max(schedule.staleness, initial=0)),
        "final_loss": float(losses[-1]) if len(losses) else float("nan"),
        "best_loss": float(np.min(losses[finite])) if finite.any() else float("nan"),
        "diverged": bool((~finite).any() or (finite.any() and losses[finite][-1] > initial_loss)),
        "time_to_target": float(schedule.wall_clock[reached[0]]) if len(reached) else None,
        "updates_to_target": int(reached[0] + 1) if len(reached) else None,
    }


def run(config, workdir: Path, tracker) -> tuple[dict[str, Any], str, list[Path]]:
    import models

    c = config.async_sgd
    key_init, key_valid, key_data = jax.random.split(jax.random.key(config.seed), 3)
    task = models.get_task(c.task, batch_size=c.worker_batch_size)
    sync_task = models.get_task(c.task, batch_size=c.worker_batch_size * c.sync_workers)
    params = task.init(key_init)
    valid = models.get_task(c.task, batch_size=256).sample_batch(key_valid, "valid")
    eval_fn = jax.jit(lambda p: task.loss(p, valid))
    initial_loss = float(eval_fn(params))
    tx = optax.sgd(c.learning_rate)
    budget, jitter = c.wall_clock_budget, c.jitter
    even = [1.0] * c.sync_workers
    straggler = [1.0] * (c.sync_workers - 1) + [c.straggler_slowdown]

    runs = {}  # name -> (schedule, eval losses, examples per update)

    def simulate(name, schedule, run_task, scaling="none", tx=tx):
        schedule = _cut(schedule, budget) if np.isfinite(budget) else schedule
        key = jax.random.fold_in(key_data, len(runs))
        result = async_sgd.run_async_sgd(
            run_task.loss, tx, params, _batches(run_task, key, len(schedule.staleness)),
            schedule.staleness, staleness_scaling=scaling, eval_fn=eval_fn,
        )
        runs[name] = (schedule, np.asarray(result.eval_losses), run_task is sync_task)

    # Generous update counts, then cut at the wall-clock budget.
    sync_steps = int(budget) + 1
    simulate("sync", async_sgd.sync_schedule(sync_steps, even, config.seed, jitter), sync_task)
    scaled_lr = large_batch.scaled_learning_rate(c.learning_rate, 1, c.sync_workers)
    simulate("sync_scaled_lr", async_sgd.sync_schedule(sync_steps, even, config.seed, jitter),
             sync_task, tx=optax.sgd(scaled_lr))
    simulate("sync_straggler",
             async_sgd.sync_schedule(sync_steps, straggler, config.seed, jitter), sync_task)
    for workers in c.num_workers:
        schedule = async_sgd.worker_schedule(int(budget * workers * 2) + workers,
                                             [1.0] * workers, config.seed, jitter)
        simulate(f"async_{workers}", schedule, task)
        simulate(f"async_{workers}_inverse", schedule, task, scaling="inverse")
    schedule = async_sgd.worker_schedule(int(budget * c.sync_workers * 2), straggler,
                                         config.seed, jitter)
    simulate("async_straggler", schedule, task)

    target = float(runs["sync"][1][-1])  # the loss sync SGD reaches within the budget
    rows = []
    for name, (schedule, losses, is_sync) in runs.items():
        per_update = c.worker_batch_size * (c.sync_workers if is_sync else 1)
        rows.append(_summary(name, schedule, losses, per_update, initial_loss, target))
        tracker.log_metrics(len(rows), {f"async/{k}": v for k, v in rows[-1].items()
                                        if isinstance(v, int | float) and v is not None})

    fixed = {}
    for tau in c.fixed_staleness:
        schedule = async_sgd.fixed_schedule(c.fixed_updates, tau)
        for scaling in ("none", "inverse"):
            name = f"tau={tau}" + ("/tau" if scaling == "inverse" else "")
            batches = _batches(task, jax.random.fold_in(key_data, 1000 + tau), c.fixed_updates)
            result = async_sgd.run_async_sgd(task.loss, tx, params, batches, schedule.staleness,
                                             staleness_scaling=scaling, eval_fn=eval_fn)
            fixed[name] = np.asarray(result.eval_losses)

    results = {
        "task": c.task, "optimizer": f"sgd(lr={c.learning_rate})", "split": "valid",
        "seed": config.seed, "initial_loss": initial_loss, "target_loss": target,
        "wall_clock_budget": budget, "rows": rows,
        "fixed_staleness": {name: {"final_loss": float(l[-1]), "best_loss": float(np.nanmin(l))}
                            for name, l in fixed.items()},
    }
    figures = [_plot_runs(runs, workdir / "async_loss.png", initial_loss),
               _plot_fixed(fixed, workdir / "async_staleness.png", initial_loss)]
    return results, format_report(results, c), figures


def _plot_runs(runs, path: Path, initial_loss: float) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (by_step, by_time) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, (schedule, losses, _) in runs.items():
        if name.endswith("_inverse") and name != "async_16_inverse":
            continue  # keep the plot readable: one staleness-scaled curve
        style = "-" if name.startswith("sync") else "--"
        shown = np.clip(losses, 1e-3, 10 * initial_loss)
        by_step.plot(np.arange(1, len(losses) + 1), shown, style, label=name)
        by_time.plot(schedule.wall_clock, shown, style, label=name)
    by_step.set(xscale="log", yscale="log", xlabel="server updates",
                ylabel="validation loss", title="loss vs updates")
    by_time.set(yscale="log", xlabel="simulated wall-clock (mean gradients)",
                ylabel="validation loss", title="loss vs simulated wall-clock")
    by_time.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_fixed(fixed, path: Path, initial_loss: float) -> Path:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for name, losses in fixed.items():
        ax.plot(np.arange(1, len(losses) + 1), np.clip(losses, 1e-3, 10 * initial_loss),
                "--" if "/tau" in name else "-", label=name)
    ax.set(yscale="log", xlabel="server updates", ylabel="validation loss",
           title="fixed staleness (clipped at 10x the initial loss)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _cell(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else ("-" if v is None else str(v))


def format_report(results, c) -> str:
    """report.md of the sync / async comparison (the plots sit beside it)."""
    columns = ["config", "updates", "examples", "mean_staleness", "max_staleness", "final_loss",
               "best_loss", "diverged", "time_to_target", "updates_to_target"]
    lines = [
        "# Synchronous vs asynchronous SGD (simulated)", "",
        f"Task {results['task']}, {results['optimizer']}, worker batch {c.worker_batch_size}, "
        f"sync over {c.sync_workers} workers, straggler {c.straggler_slowdown}x slower, compute "
        f"jitter {c.jitter}, seed {results['seed']}, wall-clock budget "
        f"{results['wall_clock_budget']} mean gradients. Loss: {results['split']} split "
        f"(initial {results['initial_loss']:.3f}); target = sync SGD's final loss "
        f"{results['target_loss']:.3f}.", "",
        records_table(results["rows"], columns, fmt=_cell),
    ]
    lines += ["", "Fixed staleness, loss after "
              f"{c.fixed_updates} updates (\"/tau\": staleness-scaled step):", ""]
    lines += [f"- {name}: final {v['final_loss']:.3g}, best {v['best_loss']:.3g}"
              for name, v in results["fixed_staleness"].items()]
    lines += ["", "![loss](async_loss.png)", "", "![staleness](async_staleness.png)"]
    return "\n".join(lines) + "\n"
