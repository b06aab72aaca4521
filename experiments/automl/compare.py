"""The seed question: tuned Adam with N trials against a learned optimizer with 0.

    curve = best_so_far([0.9, 0.5, 0.7, 0.3])            # [0.9, 0.5, 0.5, 0.3]
    evaluate = FinalEvaluation(task, num_steps=300, eval_every=50, seeds=(0, 1, 2))
    scores = evaluate(make_tx, args)                      # {"valid": ..., "test": ...}
    rows = learned_optimizer_rows(evaluate, lopt_names)   # each shipped optimizer at default

Protocol (generalization): every search reads "train" and "valid" only. "test" is read here,
after the searches, by `FinalEvaluation`: a separate training run per chosen configuration
with its own seeds, evaluated on "valid" and then, from the parameter snapshots, on "test"
(`training.make_eval_fn`), so the tuning code path never touches the test split.

Learned optimizers: each shipped optimizer is reported at its card's learning rate (0 trials)
and, with `learned_trials`, after N trials of the same search as Adam's over its learning rate
on a log range centred on the card's rate (`learned_lr_space`), picked and re-run on the final
seeds like Adam's configurations. An optimizer whose `optimizer()` takes no learning rate
(`lopt_takes_learning_rate`) gets its 0-trial row only.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from learned_opt import training as train_loop


def best_so_far(values: Sequence[float]) -> list[float]:
    """Running minimum (NaN, a failed trial, counts as no improvement)."""
    out, best = [], math.inf
    for value in values:
        if value is not None and not math.isnan(value):
            best = min(best, value)
        out.append(best)
    return out


def best_params_after(trials, num_trials: int) -> dict[str, Any] | None:
    """The parameters of the best complete trial among the first `num_trials` finished ones."""
    finished = [t for t in trials if t.state != "RUNNING"][:num_trials]
    complete = [t for t in finished if t.state == "COMPLETE" and t.value is not None]
    return min(complete, key=lambda t: t.value).params if complete else None


class FinalEvaluation:
    """Train with `make_tx(args)` on fresh seeds, then score "valid" and "test" (see module
    docstring). The score of a split is the mean over seeds of the mean of its last `last_k`
    evaluations (+inf if non-finite), the same statistic the searches minimise on "valid"."""

    def __init__(self, task, *, num_steps: int, eval_every: int, seeds: Sequence[int],
                 last_k: int = 2, eval_batches: int = 2, full_split_eval: bool = True):
        self.task, self.num_steps, self.eval_every = task, num_steps, eval_every
        self.last_k = last_k
        self.keys = train_loop.seed_keys(list(seeds))
        self.loop = dict(eval_batches=eval_batches, full_split_eval=full_split_eval)
        self.evaluate_test = train_loop.make_eval_fn(task, ("test",), **self.loop)

    def __call__(self, make_tx: Callable, args) -> dict[str, float]:
        run = train_loop.make_run_fn(self.task, make_tx, num_steps=self.num_steps,
                                     eval_every=self.eval_every, eval_splits=("valid",),
                                     keep_snapshots=True, **self.loop)
        curves = run(args, self.keys)
        test = self.evaluate_test(curves.snapshots, self.keys)
        out = {}
        pairs = (("valid", curves.evals["valid"]["loss"]), ("test", test["test"]["loss"]))
        for split, losses in pairs:
            losses = np.asarray(jax.device_get(losses), dtype=np.float64)
            finite = np.all(np.isfinite(losses))
            out[split] = float(losses[:, -self.last_k:].mean()) if finite else math.inf
        return out


def lopt_takes_learning_rate(lopt) -> bool:
    """Whether `lopt.optimizer` accepts a `learning_rate` argument."""
    return "learning_rate" in inspect.signature(lopt.optimizer).parameters


def learned_lr_space(default_lr: float, decades: float):
    """A log-uniform learning-rate range `default_lr x 10^(+-decades / 2)`."""
    from experiments.automl.space import Float, SearchSpace

    if not (default_lr > 0 and decades > 0):
        raise ValueError(f"need a positive default learning rate and decades; got "
                         f"{default_lr}, {decades}")
    half = 10.0 ** (decades / 2)
    return SearchSpace({"learning_rate": Float(default_lr / half, default_lr * half, log=True)})


def learned_optimizer_tx(name: str, num_steps: int):
    """(make_tx(args), takes_learning_rate, card learning rate) of a shipped learned optimizer;
    `args` is {} (its default) or {"learning_rate": lr} (traced) when the optimizer takes one."""
    import learned_opt as lo

    lopt, theta, card = lo.load_pretrained_theta(name)
    horizon = num_steps if getattr(lopt, "needs_num_steps", False) else None
    takes_lr = lopt_takes_learning_rate(lopt)

    def make_tx(args):
        extra = {"learning_rate": args["learning_rate"]} if takes_lr and args else {}
        return lopt.optimizer(theta, num_steps=horizon, **extra)

    return make_tx, takes_lr, card.get("learning_rate")


def adam_rows(evaluate: FinalEvaluation, trials_by_seed: Mapping[int, Sequence],
              budgets: Sequence[int], cache: dict, make_tx: Callable | None = None,
              cache_prefix: str = "") -> list[dict[str, Any]]:
    """One row per (search seed, budget): the best-so-far valid objective of the search and
    the final valid / test scores of the configuration it picked. `cache` maps a parameter
    repr to its final scores (persisted by the caller so a resumed run re-evaluates nothing).
    `make_tx(traced hparams)` replaces the optax optimizer named by the trial (a learned
    optimizer's search), its cache keys prefixed by `cache_prefix`."""
    from experiments.automl.objectives import OPTIMIZER_KEY, optax_optimizer

    rows = []
    for search_seed, trials in trials_by_seed.items():
        curve = best_so_far([t.value if t.state == "COMPLETE" else math.nan
                             for t in trials if t.state != "RUNNING"])
        for budget in budgets:
            params = best_params_after(trials, budget)
            if params is None or budget > len(curve):
                continue
            key = cache_prefix + repr(sorted(params.items()))
            if key in cache:
                pass
            elif make_tx is not None:
                cache[key] = evaluate(make_tx, {k: np.float32(v) for k, v in params.items()})
            else:
                static = {k: v for k, v in params.items() if not isinstance(v, float)}
                name = static.pop(OPTIMIZER_KEY, "adam")
                traced = {k: np.float32(v) for k, v in params.items() if isinstance(v, float)}
                cache[key] = evaluate(
                    lambda a, name=name, static=static: optax_optimizer(name, {**static, **a}),
                    traced)
            rows.append({"search_seed": search_seed, "trials": budget,
                         "search_valid": curve[budget - 1], "params": params, **cache[key]})
    return rows


def plot_budget_curve(adam: Sequence[Mapping], lopts: Sequence[Mapping], path: str | Path,
                      title: str) -> Path:
    """Adam's final valid / test score against its trial budget (mean over search seeds with a
    min-max band), each learned optimizer at 0 trials as a horizontal line and after N trials
    (mean over search seeds) as a square."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharex=True)
    budgets = sorted({r["trials"] for r in adam})
    for ax, split in zip(axes, ("valid", "test"), strict=True):
        if budgets:
            values = [[r[split] for r in adam if r["trials"] == b] for b in budgets]
            ax.plot(budgets, [np.mean(v) for v in values], "o-", color="black",
                    label="Adam, tuned with N trials")
            ax.fill_between(budgets, [min(v) for v in values], [max(v) for v in values],
                            color="black", alpha=0.15)
        names = list(dict.fromkeys(row["name"] for row in lopts))
        for row in lopts:
            color = f"C{names.index(row['name'])}"
            if row["trials"] == 0:
                ax.axhline(row[split], linestyle="--", color=color,
                           label=f"{row['name']} (0 trials)")
            else:
                ax.plot(row["trials"], row[split], "s", color=color, markersize=6,
                        label=f"{row['name']} ({row['trials']} trials)")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("Adam's trial budget N")
        ax.set_ylabel(f"{split} loss (final seeds)")
        ax.set_title(f"{split}")
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
