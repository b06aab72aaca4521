"""The benchmark's config, parsed and validated once into one frozen `BenchmarkSpec`.

Every helper of the benchmark receives the spec, never the raw ml_collections config: a bad
name or budget fails here, with a ValueError listing the valid choices, before any task is
built or anything is compiled.

    spec = BenchmarkSpec.from_config(config)
    spec.protocols          # ("optimization", "generalization") for protocol="both"
    spec.tuning             # the TuningSpec every tuned optimizer is tuned with
"""

from __future__ import annotations

import dataclasses
from typing import Any

from experiments import cli
from experiments.benchmarking import baselines
from experiments.benchmarking.tuning import PROTOCOLS, TuningSpec

PROTOCOL_CHOICES = {"optimization": ("optimization",), "generalization": ("generalization",),
                    "both": PROTOCOLS}
# How learned optimizers are tuned: "auto" tunes those that take a learning rate (on a grid
# relative to their default) and reports the others at their default only; "relative" demands
# it of every learned optimizer (ValueError for one without a learning rate); "none" never.
LEARNED_TUNING = ("auto", "relative", "none")
# How a tuned learned optimizer's learning rate moves: "same" = the tuned baselines' schedule
# (`schedule`, `warmup_fraction`, `end_fraction`) with its tuned rate as the peak, exactly as
# tuned Adam's; "constant" = its tuned rate at every step.
LEARNED_SCHEDULES = ("same", "constant")
TRACKS = ("tuned", "self_tuning")
REFERENCE = {"tuned": "adam", "self_tuning": baselines.ADAM_DEFAULT}


def _choice(value: str, choices, what: str) -> str:
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; valid choices: {list(choices)}")
    return value


def _names(value, choices, what: str) -> tuple[str, ...]:
    names = cli.names(value)
    unknown = [n for n in names if n not in choices]
    if unknown:
        raise ValueError(f"unknown {what} {unknown}; valid choices: {sorted(choices)}")
    if len(set(names)) != len(names):
        raise ValueError(f"{what}: duplicate names in {list(names)}")
    return names


@dataclasses.dataclass(frozen=True)
class SuiteSpec:
    """Which tasks (`benchmarking.suite.build_suite`)."""

    tasks: tuple[str, ...] = ()
    task_overrides: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...] = ()
    heldout_families: tuple[str, ...] = ()
    num_heldout: int = 1
    heldout_seed: int = 0
    ood: bool = False
    ood_names: tuple[str, ...] = ()

    def overrides(self, task: str) -> dict[str, Any]:
        """Keyword overrides of named task `task`."""
        return dict(dict(self.task_overrides).get(task, ()))


@dataclasses.dataclass(frozen=True)
class BenchmarkSpec:
    """Everything the benchmark needs, validated (see `from_config` for the config keys)."""

    protocols: tuple[str, ...]
    suite: SuiteSpec
    baselines: tuple[str, ...]          # tuned track, "adam" included
    tuning_free: tuple[str, ...]        # self-tuning track, beside Adam at 1e-3
    learned: tuple[str, ...]            # learned optimizer specs ("pretrained:NAME", ...)
    learned_tuning: str
    learned_grid_decades: float         # the relative grid spans default x 10^(+-decades / 2)
    learned_schedule: str               # LEARNED_SCHEDULES: the tuned learned entries' schedule
    lopt_init_seed: int
    schedule: str
    warmup_fraction: float
    end_fraction: float
    num_steps: int
    eval_every: int
    eval_batches: int
    full_split_eval: bool
    seeds: tuple[int, ...]
    smoothing_window: int
    curve_stride: int
    tuning: TuningSpec
    reuse_from: str
    bootstrap_resamples: int
    bootstrap_seed: int
    backends: tuple[str, ...]
    predictions: bool = True            # save final models' predictions, evaluate them
    prediction_sample_rows: int = 64    # test rows per model logged to the trackers
    evaluation_resamples: int = 1000    # bootstrap resamples of the offline evaluation

    @classmethod
    def from_config(cls, config) -> BenchmarkSpec:
        """Parse `config` (keys of `experiments/configs/benchmark_quick.py`); ValueError on any
        unknown name or bad number, naming the key and the valid choices."""
        get = config.get
        protocol = _choice(str(get("protocol", "both")), PROTOCOL_CHOICES, "protocol")
        tuned = _names(get("baselines", "adam"), baselines.TUNED, "tuned baseline(s)")
        if "adam" not in tuned:
            raise ValueError(f"config.baselines={list(tuned)} must include 'adam': tuned Adam is "
                             "the reference of the tuned track")
        num_steps, eval_every = int(config.num_steps), int(config.eval_every)
        if num_steps <= 0 or eval_every <= 0 or num_steps % eval_every:
            raise ValueError(f"num_steps={num_steps} must be a positive multiple of "
                             f"eval_every={eval_every}")
        seeds = tuple(int(s) for s in config.seeds)
        t = config.tuning
        tuning_seeds = tuple(int(s) for s in t.seeds)
        if not seeds or len(set(seeds)) != len(seeds):
            raise ValueError(f"config.seeds={list(seeds)}: need distinct final seeds")
        if set(seeds) & set(tuning_seeds):
            raise ValueError(f"config.seeds {list(seeds)} and config.tuning.seeds "
                             f"{list(tuning_seeds)} overlap: final runs must use fresh seeds")
        window, stride = int(config.smoothing_window), int(config.curve_stride)
        if window < 1 or stride < 1:
            raise ValueError(f"smoothing_window={window} and curve_stride={stride} must be >= 1")
        warmup, end = float(get("warmup_fraction", 0.05)), float(get("end_fraction", 0.0))
        if not (0.0 <= warmup < 1.0 and 0.0 <= end <= 1.0):
            raise ValueError(f"warmup_fraction={warmup} must be in [0, 1) and end_fraction={end} "
                             "in [0, 1]")
        decades = float(get("learned_grid_decades", 3.0))
        if decades <= 0:
            raise ValueError(f"learned_grid_decades={decades} must be positive")
        resamples = int(get("bootstrap_resamples", 2000))
        if resamples < 100:
            raise ValueError(f"bootstrap_resamples={resamples} must be >= 100")
        evaluation_resamples = int(get("evaluation_resamples", 1000))
        sample_rows = int(get("prediction_sample_rows", 64))
        if evaluation_resamples < 100 or sample_rows < 0:
            raise ValueError(f"evaluation_resamples={evaluation_resamples} must be >= 100 and "
                             f"prediction_sample_rows={sample_rows} >= 0")
        protocols = PROTOCOL_CHOICES[protocol]
        tuning = TuningSpec(
            num_steps=num_steps, eval_every=eval_every, eval_batches=int(config.eval_batches),
            full_split_eval=bool(config.full_split_eval), smoothing_window=window,
            last_k=int(t.last_k), seeds=tuning_seeds, sampler=str(t.sampler),
            grid_points=int(t.grid_points), weight_decay_points=int(t.weight_decay_points),
            num_trials=int(t.num_trials), sampler_seed=int(t.sampler_seed), protocols=protocols)
        overrides = dict(get("task_overrides", {}) or {})
        suite = SuiteSpec(
            tasks=cli.names(get("tasks")),
            task_overrides=tuple((name, tuple(sorted(dict(kw or {}).items())))
                                 for name, kw in sorted(overrides.items())),
            heldout_families=cli.names(get("heldout_families")),
            num_heldout=int(get("num_heldout", 1)), heldout_seed=int(get("heldout_seed", 0)),
            ood=bool(get("ood", False)), ood_names=cli.names(get("ood_names")))
        if suite.num_heldout < 1 and suite.heldout_families:
            raise ValueError(f"num_heldout={suite.num_heldout} must be >= 1")
        return cls(
            protocols=protocols, suite=suite, baselines=tuned,
            tuning_free=_names(get("tuning_free", ""), baselines.TUNING_FREE,
                               "tuning-free baseline(s)"),
            learned=cli.names(get("learned")),
            learned_tuning=_choice(str(get("learned_tuning", "auto")), LEARNED_TUNING,
                                   "learned_tuning"),
            learned_grid_decades=decades,
            learned_schedule=_choice(str(get("learned_schedule", "same")), LEARNED_SCHEDULES,
                                     "learned_schedule"),
            lopt_init_seed=int(get("lopt_init_seed", 0)),
            schedule=_choice(str(get("schedule", "warmup_cosine")), baselines.SCHEDULES,
                             "schedule"),
            warmup_fraction=warmup, end_fraction=end, num_steps=num_steps,
            eval_every=eval_every, eval_batches=tuning.eval_batches,
            full_split_eval=tuning.full_split_eval, seeds=seeds, smoothing_window=window,
            curve_stride=stride, tuning=tuning, reuse_from=str(t.get("reuse_from", "") or ""),
            bootstrap_resamples=resamples, bootstrap_seed=int(get("bootstrap_seed", 0)),
            backends=tuple(get("backends", ("local",))),
            predictions=bool(get("predictions", True)), prediction_sample_rows=sample_rows,
            evaluation_resamples=evaluation_resamples)

    def lr_schedule(self) -> baselines.Schedule:
        """The tuned baselines' learning-rate schedule."""
        return baselines.Schedule(self.schedule, self.num_steps, self.warmup_fraction,
                                  self.end_fraction)

    def learned_lr_schedule(self) -> baselines.Schedule:
        """The tuned learned optimizers' schedule: the baselines' (`learned_schedule="same"`)
        or constant."""
        if self.learned_schedule == "constant":
            return baselines.Schedule("constant", self.num_steps)
        return self.lr_schedule()

    def as_dict(self) -> dict:
        """JSON-able settings (results.json's `settings`)."""
        out = dataclasses.asdict(self)
        out["suite"]["task_overrides"] = {name: dict(kw) for name, kw in
                                          self.suite.task_overrides}
        return out
