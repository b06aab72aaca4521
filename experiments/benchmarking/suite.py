"""What the benchmark runs: the task suite and the optimizers, resolved from a config.

Tasks come from three sources (any combination):
  * `config.tasks`: named tasks, `models.get_task(name, **config.task_overrides.get(name, {}))`;
  * `config.heldout_families`: for each family,
    `models.heldout_tasks(family, config.num_heldout, config.heldout_seed)`: tasks of the family's
    held-out split (never seen in meta-training);
  * `config.ood`: `models.ood_suite()`, optionally filtered by `config.ood_names`.

Learned optimizers are given as specs (`config.learned`, comma-separated):
  * `pretrained:NAME`  shipped weights (`learned_opt.pretrained.list_pretrained()` lists them);
  * `checkpoint:PATH`  a pretrained card (.json) or its weights (.msgpack) written anywhere, e.g.
                       by `experiments.meta_train` into its workdir;
  * `default:ARCH`     architecture ARCH (`lo.list_lopts()`) with its *untrained* default theta
                       `lopt.init(key(config.lopt_init_seed))`, labelled "untrained default".
A learned optimizer whose `lopt.optimizer` takes a `learning_rate` (and whose card, or
signature, gives its default) can be tuned on a grid relative to that default
(`LearnedSpec.default_learning_rate`); one without it is reported at its default only.

    suite = build_suite(spec.suite)                # [SuiteTask(label, task, origin, family)]
    learned = [resolve_learned(s, num_steps) for s in spec.learned]
    tx = learned[0].make_tx(learned[0].tx_args)    # tx_args: {"theta": ..., ["learning_rate"]}
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from experiments import cli

ORIGINS = ("named", "heldout", "ood")
LEARNED_KINDS = ("pretrained", "checkpoint", "default")


class SuiteTask(NamedTuple):
    """label: unique name in the report; origin: one of ORIGINS; family: the task family the task
    belongs to (held-out tasks and named tasks whose name is a family), else None."""

    label: str
    task: Any
    origin: str
    family: str | None


class LearnedSpec(NamedTuple):
    """A learned optimizer ready to run: `make_tx(tx_args)` inside jit, `tx_args` =
    {"theta": theta} plus {"learning_rate": its default, float32} when it takes one.

    meta_families: the task families it was meta-trained on (empty for an untrained default);
    description: what it is, honestly ("untrained default", the pretrained card's name, ...);
    default_learning_rate: the default its relative tuning grid centres on; None when it takes
    no learning rate (it then cannot be tuned).
    default_schedule: the shape its `optimizer` gives a float learning rate over the
    benchmark's horizon (`default_schedule` of architectures that have one, e.g. NormMLPLOpt's
    warmup + cosine; else "constant"): what the self-tuning track runs.
    """

    label: str
    kind: str
    make_tx: Callable[[Any], Any]
    tx_args: Any
    meta_families: tuple[str, ...]
    description: str
    config: Mapping[str, Any]
    default_learning_rate: float | None = None
    compile_key: Any = None  # equal for equal architectures: one compiled run serves both
    default_schedule: str = "constant"

    @property
    def tunable(self) -> bool:
        return self.default_learning_rate is not None


def parse_names(text: str | None) -> list[str]:
    """'a, b,c' -> ['a', 'b', 'c']; '' / None -> []."""
    return list(cli.names(text))


def _unique_label(label: str, taken: set[str]) -> str:
    candidate, index = label, 1
    while candidate in taken:
        index += 1
        candidate = f"{label}#{index}"
    taken.add(candidate)
    return candidate


def build_suite(spec) -> list[SuiteTask]:
    """The tasks of a `benchmarking.spec.SuiteSpec` (see the module docstring); ValueError names
    unknown tasks / families."""
    import models

    suite: list[SuiteTask] = []
    taken: set[str] = set()
    families = set(models.list_families())
    valid_tasks = models.list_tasks()
    for name in spec.tasks:
        if name not in valid_tasks:
            raise ValueError(f"unknown task {name!r}; valid tasks: {valid_tasks}")
        task = models.get_task(name, **spec.overrides(name))
        suite.append(SuiteTask(_unique_label(name, taken), task, "named",
                               name if name in families else None))
    for family in spec.heldout_families:
        if family not in families:
            raise ValueError(f"unknown task family {family!r}; valid families: {sorted(families)}")
        tasks = models.heldout_tasks(family, spec.num_heldout, spec.heldout_seed)
        for index, task in enumerate(tasks):
            label = _unique_label(f"{family}/heldout{index}", taken)
            suite.append(SuiteTask(label, task, "heldout", family))
    if spec.ood:
        available = models.ood_suite()
        names = [name for name, _ in available]
        unknown = [n for n in spec.ood_names if n not in names]
        if unknown:
            raise ValueError(f"unknown out-of-distribution task(s) {unknown}; valid: {names}")
        for name, task in available:
            if not spec.ood_names or name in spec.ood_names:
                suite.append(SuiteTask(_unique_label(f"ood/{name}", taken), task, "ood", None))
    if not suite:
        raise ValueError("the benchmark suite is empty: set config.tasks, config.heldout_families "
                         "or config.ood")
    return suite


# Where a task lies relative to a learned optimizer's meta-training distribution: the keys of
# results.json's summary (the targets are stated separately for the first two).
DISTRIBUTION_KINDS = ("heldout_in_family", "out_of_distribution", "named_in_family",
                      "not_meta_trained")


def distribution_kind(suite_task: SuiteTask, learned: LearnedSpec) -> str:
    """One of DISTRIBUTION_KINDS: `suite_task` relative to `learned`'s meta-training families.

    A held-out task of a family the optimizer was NOT meta-trained on is out of distribution
    for it, even though the suite lists it under "heldout".
    """
    if not learned.meta_families:
        return "not_meta_trained"
    if suite_task.origin == "ood" or suite_task.family not in learned.meta_families:
        return "out_of_distribution"
    return "heldout_in_family" if suite_task.origin == "heldout" else "named_in_family"


def distribution_label(suite_task: SuiteTask, learned: LearnedSpec) -> str:
    """Where `suite_task` lies relative to `learned`'s meta-training distribution, in words."""
    kind = distribution_kind(suite_task, learned)
    if kind == "heldout_in_family":
        return f"held-out task of meta-training family {suite_task.family}"
    if kind == "named_in_family":
        return f"named task of meta-training family {suite_task.family} (may be in distribution)"
    return {"not_meta_trained": "not meta-trained",
            "out_of_distribution": "out of distribution"}[kind]


def _families_of_card(card: Mapping[str, Any]) -> tuple[str, ...]:
    families = card.get("families", card.get("family", card.get("task_family", ())))
    if isinstance(families, str):
        families = parse_names(families)
    return tuple(families)


def _learning_rate_default(lopt, card: Mapping[str, Any], theta=None) -> float | None:
    """The default learning rate of `lopt.optimizer`: the card's `learning_rate`, else the
    signature's numeric default, else (`theta` given: an untrained default) the step size it
    runs at without one, `lopt.nominal_step_size(theta)`; None when `optimizer` takes no
    `learning_rate`."""
    parameter = inspect.signature(lopt.optimizer).parameters.get("learning_rate")
    if parameter is None:
        return None
    value = card.get("learning_rate", parameter.default)
    if not isinstance(value, int | float) and theta is not None:
        value = float(lopt.nominal_step_size(theta))
    return float(value) if isinstance(value, int | float) and value > 0 else None


def _learned_spec(label, kind, lopt, theta, num_steps, meta_families, description, config,
                  card) -> LearnedSpec:
    default_lr = _learning_rate_default(lopt, card, theta if kind == "default" else None)

    def make_tx(tx_args):
        kwargs = {"learning_rate": tx_args["learning_rate"]} if "learning_rate" in tx_args else {}
        return lopt.optimizer(tx_args["theta"], num_steps=num_steps, **kwargs)

    tx_args = {"theta": theta}
    if default_lr is not None:
        tx_args["learning_rate"] = jnp.float32(default_lr)
    key = ("learned", json.dumps(lopt.config(), sort_keys=True), num_steps,
           default_lr is not None)
    return LearnedSpec(label, kind, make_tx, tx_args, tuple(meta_families), description,
                       config, default_lr, key, getattr(lopt, "default_schedule", "constant"))


def resolve_learned(spec: str, num_steps: int, init_seed: int = 0) -> LearnedSpec:
    """A LearnedSpec from 'pretrained:NAME', 'checkpoint:PATH' or 'default:ARCH'; a ValueError
    lists the choices (a corrupt or foreign weights file fails in `load_pretrained_theta`)."""
    import learned_opt as lo

    kind, _, name = spec.partition(":")
    if kind not in LEARNED_KINDS or not name:
        raise ValueError(f"bad learned optimizer spec {spec!r}; expected 'KIND:NAME' with KIND in "
                         f"{LEARNED_KINDS}, e.g. 'default:mlp' (architectures: {lo.list_lopts()})")
    if kind == "default":
        if name not in lo.list_lopts():
            raise ValueError(f"unknown learned optimizer {name!r}; valid: {lo.list_lopts()}")
        lopt = lo.get_lopt(name)
        return _learned_spec(
            f"{name} (untrained default)", kind, lopt, lopt.init(jax.random.key(init_seed)),
            num_steps, (),
            f"{name} with its untrained default theta (init seed {init_seed}); not meta-trained",
            {"architecture": lopt.config(), "init_seed": init_seed}, {})
    from learned_opt import pretrained

    if kind == "pretrained":
        available = [card["name"] for card in pretrained.list_pretrained()]
        if name not in available:
            raise ValueError(f"unknown pretrained learned optimizer {name!r}; shipped: {available}")
    elif not Path(name).is_file():
        raise ValueError(f"checkpoint {name!r} is not a file (expected a pretrained card .json or "
                         f"its .msgpack weights, as written by experiments.meta_train)")
    lopt, theta, card = pretrained.load_pretrained_theta(name)
    card_name = card.get("name", name)
    label = card_name if kind == "pretrained" else f"{card_name} (checkpoint)"
    return _learned_spec(
        label, kind, lopt, theta, num_steps, _families_of_card(card),
        f"{kind} {card_name}: {lopt.name} meta-trained on {card.get('family', 'unknown family')}",
        {k: v for k, v in card.items() if k not in ("config", "heldout_results")}, card)
