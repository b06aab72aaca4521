"""The hand-designed optimizers the benchmark compares against, all from optax / optax.contrib.

Two kinds:
  * TUNED baselines (`TUNED`): SGD, SGD + Nesterov momentum, Adam, AdamW and Muon, tuned per task
    over `ranges` (log scale) and run with a learning-rate schedule (`Schedule`): warmup + cosine
    decay by default, `constant` to keep the peak rate throughout.
  * TUNING-FREE baselines (`TUNING_FREE`): schedule-free AdamW, Prodigy, DoG, DoWG, D-Adaptation
    AdamW at their published defaults (optax's defaults), never tuned and run without a schedule:
    the self-tuning track, beside Adam at its default 1e-3 (`ADAM_DEFAULT`).

Schedule-free AdamW trains at one point of its iterate sequence and must be evaluated at another
(`optax.contrib.schedule_free_eval_params`): its `eval_params` says so, and
`benchmarking.eval_params` evaluates it there.

    tx = make_baseline("adam", {"learning_rate": 3e-3}, Schedule("warmup_cosine", 1000))
    tx = make_baseline("prodigy", {}, None)     # tuning-free: no hyperparameters, no schedule
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import optax
import optax.contrib

# Nesterov's momentum is fixed, not tuned: the issue tunes learning rate (and AdamW's decay) only.
NESTEROV_MOMENTUM = 0.9
# Muon's updates scaled to AdamW's RMS (Moonshot's "consistent RMS", 0.2): one learning rate
# then serves its orthogonalised matrices and the Adam it uses for every non-2-D parameter.
MUON_CONSISTENT_RMS = 0.2
SCHEDULES = ("warmup_cosine", "constant")
# Up to 0.3: the training-loss objective often wants Adam's rate above 0.1 on small tasks (the
# optimization protocol's winner sat on a 0.1 edge when the range stopped there).
ADAM_RANGE = (1e-4, 3e-1)
# Adam at its usual default rate: the self-tuning track's reference.
ADAM_DEFAULT = "adam@1e-3"
ADAM_DEFAULT_LR = 1e-3


class Schedule(NamedTuple):
    """How a tuned baseline's learning rate moves over `num_steps`: `SCHEDULES` entry `name`;
    warmup_cosine rises linearly from 0 over `warmup_fraction` of the steps to the tuned peak,
    then decays by a cosine to `end_fraction` x peak at the last step."""

    name: str
    num_steps: int
    warmup_fraction: float = 0.05
    end_fraction: float = 0.0

    def __call__(self, peak, constant_weight=0.0):
        """The schedule with peak `peak` (a float or a traced array); `constant_weight` = 1
        turns it into the constant `peak` (a traced switch: one compiled run serves both)."""
        if self.name == "constant":
            return peak
        # optax's schedule at peak 1, scaled: its peak must be a Python number (it branches on
        # it), while a tuned peak is a traced array (one compiled run serves every trial).
        unit = optax.warmup_cosine_decay_schedule(
            init_value=0.0, peak_value=1.0,
            warmup_steps=max(1, round(self.warmup_fraction * self.num_steps)),
            decay_steps=self.num_steps, end_value=self.end_fraction)
        return lambda step: peak * (constant_weight + (1.0 - constant_weight) * unit(step))


class Baseline(NamedTuple):
    """A hand-designed optimizer: `make_tx(hparams, learning_rate)` builds it (the learning rate
    already scheduled; tuning-free ones ignore both), `ranges`: hyperparameter -> (low, high),
    searched on a log scale (empty for tuning-free), `eval_params(opt_state, params)` the
    parameters to evaluate at (None: the trained params themselves)."""

    name: str
    make_tx: Callable[[Mapping[str, Any], Any], optax.GradientTransformation]
    ranges: Mapping[str, tuple[float, float]]
    description: str
    eval_params: Callable | None = None

    @property
    def tuning_free(self) -> bool:
        return not self.ranges


TUNED: dict[str, Baseline] = {b.name: b for b in (
    Baseline("sgd", lambda h, lr: optax.sgd(lr), {"learning_rate": (1e-3, 1.0)}, "SGD"),
    Baseline("nesterov",
             lambda h, lr: optax.sgd(lr, momentum=NESTEROV_MOMENTUM, nesterov=True),
             {"learning_rate": (1e-4, 3e-1)}, f"SGD, Nesterov momentum {NESTEROV_MOMENTUM}"),
    Baseline("adam", lambda h, lr: optax.adam(lr), {"learning_rate": ADAM_RANGE}, "Adam"),
    Baseline("adamw", lambda h, lr: optax.adamw(lr, weight_decay=h["weight_decay"]),
             {"learning_rate": ADAM_RANGE, "weight_decay": (1e-4, 1e-1)}, "AdamW"),
    Baseline("muon",
             lambda h, lr: optax.contrib.muon(lr, consistent_rms=MUON_CONSISTENT_RMS),
             {"learning_rate": ADAM_RANGE},
             f"Muon (optax.contrib, consistent RMS {MUON_CONSISTENT_RMS}; Adam on non-2-D "
             "parameters)"),
)}
TUNING_FREE: dict[str, Baseline] = {b.name: b for b in (
    Baseline("schedule_free_adamw", lambda h, lr: optax.contrib.schedule_free_adamw(), {},
             "schedule-free AdamW at optax's defaults (lr 2.5e-3), evaluated at its averaged "
             "iterate", eval_params=optax.contrib.schedule_free_eval_params),
    Baseline("prodigy", lambda h, lr: optax.contrib.prodigy(), {}, "Prodigy at its defaults"),
    Baseline("dog", lambda h, lr: optax.contrib.dog(), {}, "DoG at its defaults"),
    Baseline("dowg", lambda h, lr: optax.contrib.dowg(), {}, "DoWG at its defaults"),
    Baseline("dadapt_adamw", lambda h, lr: optax.contrib.dadapt_adamw(), {},
             "D-Adaptation AdamW at its defaults"),
)}
BASELINES: dict[str, Baseline] = TUNED | TUNING_FREE


def list_baselines() -> list[str]:
    """Names of the tuned baselines (`config.baselines`)."""
    return sorted(TUNED)


def list_tuning_free() -> list[str]:
    """Names of the tuning-free baselines (`config.tuning_free`)."""
    return sorted(TUNING_FREE)


def get_baseline(name: str) -> Baseline:
    """The baseline called `name` (tuned or tuning-free); a ValueError lists the valid names."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; valid tuned baselines: {list_baselines()}, "
                         f"tuning-free: {list_tuning_free()}")
    return BASELINES[name]


def adam_family(args: Mapping[str, Any], schedule: Schedule) -> optax.GradientTransformation:
    """Adam, AdamW and Adam(1e-3) as ONE transform, so one compiled run serves all three:
    `optax.adamw` at `args["learning_rate"]` with weight decay `args["weight_decay"]` (0 for
    Adam: adamw then adds 0 x params, i.e. computes exactly Adam's update) and `schedule`, made
    constant by `args["constant_schedule"]` = 1 (Adam at its default)."""
    learning_rate = schedule(args["learning_rate"], args["constant_schedule"])
    return optax.adamw(learning_rate, weight_decay=args["weight_decay"])


def make_baseline(name: str, hparams: Mapping[str, Any],
                  schedule: Schedule | None = None) -> optax.GradientTransformation:
    """The optax transform of baseline `name` at `hparams`; a tuned baseline's learning rate
    follows `schedule` (None: constant)."""
    baseline = get_baseline(name)
    missing = set(baseline.ranges) - set(hparams)
    if missing:
        raise ValueError(f"baseline {name!r} needs hyperparameters {sorted(missing)}")
    if baseline.tuning_free:
        return baseline.make_tx(hparams, None)
    peak = hparams["learning_rate"]
    return baseline.make_tx(hparams, schedule(peak) if schedule is not None else peak)
