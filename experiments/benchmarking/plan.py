"""What runs on every task: the benchmark's entries, each with its track, built once from a spec.

Tracks (`spec.TRACKS`):
  * tuned: the tuned baselines (tuned Adam is this track's reference) and every learned
    optimizer that takes a learning rate, tuned on a grid of `grid_points` rates relative to its
    default (default x 10^(+-learned_grid_decades / 2), log-spaced): the same number of
    learning-rate trials as each baseline (AdamW also gets its weight-decay points), and by
    default (`learned_schedule="same"`) the same schedule, its tuned rate as the peak;
  * self_tuning (0 trials): Adam at 1e-3 (this track's reference), the tuning-free optax.contrib
    optimizers at their defaults, and every learned optimizer at its default: its default
    learning rate, constant, or on the optimizer's own `default_schedule` over the run where it
    has one (NormMLPLOpt: warmup + cosine), exactly what `lopt.optimizer(theta, num_steps=N,
    learning_rate=default)` does.

    entries = build_plan(spec, learned)     # ValueError before anything is compiled
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax.numpy as jnp
import optax

from experiments.benchmarking import baselines
from experiments.benchmarking.tuning import Tunable

TUNED_LR_SUFFIX = " (tuned lr)"
# Recorded in results.json settings: the self-tuning track runs each learned optimizer's default
# rate on its own default schedule (results without the key ran every default rate constant).
SELF_TUNING_LEARNED = "own_default_schedule"


class Entry(NamedTuple):
    """One optimizer as the benchmark runs it.

    make_tx(tx_args) builds it inside jit; tx_args: the arrays it runs at (its default; for a
    tuned entry, an example of the right structure, replaced by each protocol's winner);
    tunable: the ranges to tune (None in the self-tuning track); eval_params: see
    `benchmarking.eval_params`; compile_key: entries with the same key compute the same
    function of their tx_args and share one compiled run per task (None: its own).
    """

    label: str
    kind: str  # "baseline" | "learned"
    track: str  # "tuned" | "self_tuning"
    make_tx: Callable[[Any], optax.GradientTransformation]
    tx_args: Any
    tunable: Tunable | None
    description: str
    config: Mapping[str, Any] | None = None
    eval_params: Callable | None = None
    learned_label: str | None = None  # the LearnedSpec label (distribution lookups)
    compile_key: Any = None

    def with_hparams(self, hparams: Mapping[str, Any]):
        """tx_args with a trial's (or winner's) hyperparameters in place."""
        return {**self.tx_args, **_f32(hparams)}


def _f32(values: Mapping[str, Any]) -> dict:
    return {k: jnp.asarray(v, jnp.float32) for k, v in values.items()}


def relative_range(default: float, decades: float) -> tuple[float, float]:
    """(default / 10^(decades/2), default * 10^(decades/2))."""
    half = 10.0 ** (decades / 2.0)
    return default / half, default * half


ADAM_FAMILY = ("adam", "adamw")


def _tuned_baseline(name: str, schedule: baselines.Schedule) -> Entry:
    baseline = baselines.TUNED[name]

    def make_tx(hparams, name=name):
        return baselines.make_baseline(name, hparams, schedule)

    example = _f32({k: math.sqrt(lo * hi) for k, (lo, hi) in baseline.ranges.items()})
    description = f"{baseline.description}, tuned, {schedule.name} schedule"
    tunable = Tunable(name, make_tx, dict(baseline.ranges))
    if name in ADAM_FAMILY:
        example = _f32({"weight_decay": 0.0, "constant_schedule": 0.0}) | example
        return Entry(name, "baseline", "tuned", lambda a: baselines.adam_family(a, schedule),
                     example, tunable, description, compile_key=("adam_family", schedule))
    return Entry(name, "baseline", "tuned", make_tx, example, tunable, description)


def _tuning_free(name: str) -> Entry:
    baseline = baselines.TUNING_FREE[name]
    return Entry(name, "baseline", "self_tuning",
                 lambda args, name=name: baselines.make_baseline(name, {}), {}, None,
                 f"{baseline.description}; tuning-free, 0 trials",
                 eval_params=baseline.eval_params)


def _scheduled_learned(make_tx: Callable, schedule: baselines.Schedule) -> Callable:
    """A learned optimizer's make_tx whose `learning_rate` is the peak of `schedule`;
    tx_args["constant_schedule"] = 1 runs it at that rate, constant (as `adam_family`)."""

    def scheduled(tx_args):
        peak, constant = tx_args["learning_rate"], tx_args["constant_schedule"]
        return make_tx({**tx_args, "learning_rate": schedule(peak, constant)})

    return scheduled


def build_plan(spec, learned: list) -> list[Entry]:
    """The entries of `spec` for the resolved learned optimizers `learned` (LearnedSpecs).

    Raises ValueError when `spec.learned_tuning == "relative"` asks for a relative grid for a
    learned optimizer that takes no learning rate.
    """
    if spec.learned_tuning == "relative":
        untunable = [s.label for s in learned if not s.tunable]
        if untunable:
            raise ValueError(
                f"config.learned_tuning='relative' asks for a learning-rate grid relative to the "
                f"default, but {untunable} take(s) no learning_rate (their optimizer() has no "
                "learning_rate parameter, or no default is known); valid choices for them: "
                "learned_tuning='auto' (default only) or 'none'")
    schedule = spec.lr_schedule()
    learned_schedule = spec.learned_lr_schedule()
    entries = [_tuned_baseline(name, schedule)
               for name in sorted(spec.baselines, key=lambda n: n != "adam")]
    for s in learned:
        if spec.learned_tuning == "none" or not s.tunable:
            continue
        make_tx = _scheduled_learned(s.make_tx, learned_schedule)
        tunable = Tunable(s.label, make_tx, {
            "learning_rate": relative_range(s.default_learning_rate, spec.learned_grid_decades)})
        entries.append(Entry(
            s.label + TUNED_LR_SUFFIX, "learned", "tuned", make_tx,
            s.tx_args | _f32({"constant_schedule": 0.0}), tunable,
            f"{s.description}; learning rate tuned on a grid relative to its default "
            f"{s.default_learning_rate:g}, {learned_schedule.name} schedule", dict(s.config),
            learned_label=s.label, compile_key=(s.compile_key, learned_schedule)))
    entries.append(Entry(
        baselines.ADAM_DEFAULT, "baseline", "self_tuning",
        lambda args: baselines.adam_family(args, schedule),
        _f32({"learning_rate": baselines.ADAM_DEFAULT_LR, "weight_decay": 0.0,
              "constant_schedule": 1.0}), None,
        f"Adam at its default learning rate {baselines.ADAM_DEFAULT_LR:g}, constant; 0 trials",
        compile_key=("adam_family", schedule)))
    entries += [_tuning_free(name) for name in spec.tuning_free]
    for s in learned:
        if s.tunable and s.default_schedule == "constant":
            # Constant, through the tuned entry's function: one compiled run for both.
            make_tx, tx_args = (_scheduled_learned(s.make_tx, learned_schedule),
                                s.tx_args | _f32({"constant_schedule": 1.0}))
            compile_key = (s.compile_key, learned_schedule)
            default = f"at its default learning rate {s.default_learning_rate:g}, constant"
        else:  # exactly its own default: lopt.optimizer(theta, num_steps=N[, learning_rate])
            make_tx, tx_args, compile_key = s.make_tx, s.tx_args, s.compile_key
            default = (f"at its default learning rate {s.default_learning_rate:g} on its own "
                       f"default schedule ({s.default_schedule} over the run)" if s.tunable
                       else "at its default (it takes no learning rate)")
        entries.append(Entry(s.label, "learned", "self_tuning", make_tx, tx_args, None,
                             f"{s.description}; {default}, 0 trials", dict(s.config),
                             learned_label=s.label, compile_key=compile_key))
    labels = [e.label for e in entries]
    if len(set(labels)) != len(labels):
        raise ValueError(f"two benchmark entries share a label: {labels}")
    return entries
