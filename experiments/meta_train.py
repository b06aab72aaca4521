"""Meta-train a learned optimizer on a task family; resumable; writes a pretrained optimizer.

    python -m experiments.meta_train --config experiments/configs/meta_mlp_digits.py \
        --workdir workdirs/mlp_digits [--config.outer_steps=500 --config.estimator=tbptt]

The workdir gets config.json, env.json, metrics.jsonl (rows with `step`, `meta_loss`, ...),
checkpoints/ (every `checkpoint_every` steps and at the end) and, at the end, the final theta
in pretrained format (`<name>.msgpack` + `<name>.json`), loadable with `lo.load_pretrained`.
Run the same command again on the same workdir to resume from its latest checkpoint; a
checkpoint written under an incompatible config refuses to resume and says which keys differ.
Compiled steps go to a persistent compilation cache (`config.compile_cache`, default
`<workdir>/compile_cache`; "" turns it off), so a resumed run loads them instead of compiling
(24-group mixture: first outer step 439 s cold, 167 s warm on the 2-core dev box); the card
records `startup_s_last_session` (process start to the end of the first outer step).
On a CPU host, `--config.cpu_devices=2` splits it into 2 JAX devices and shards the population
over them: one device's program keeps ~1 core busy, so on the 2-core dev box PES runs
1.7-1.8x the task-steps/s (a checkpoint records its device count: resume with the same).

Mixtures of shape groups train one theta over several groups at once (one vmapped
sub-population of `num_tasks` tasks per group; the meta-gradient averages over groups):
`--config.num_groups=3` draws 3 meta-train groups of the family (-1: all of them), and
`--config.family=digits_mlp,mnist1d_mlp` mixes families (num_groups groups of each):

    python -m experiments.meta_train --config experiments/configs/meta_mixed.py \
        --workdir workdirs/mixed --config.family=digits_mlp,mnist1d_mlp --config.num_groups=2

Warm start (fine-tuning): `--config.init_from=NAME_OR_CARD` starts theta from a shipped or saved
pretrained optimizer of the same architecture instead of `lopt.init(seed)`; the new card
records where it started (name, weights sha256, outer steps behind it).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import jax
import ml_collections
from absl import logging
from tqdm import tqdm

import learned_opt as lo
import models
from experiments import cli, tracking
from experiments.configs import meta_base
from learned_opt import meta
from learned_opt.meta.checkpoint import MetaCheckpointer
from learned_opt.pretrained import save_pretrained
from models.augment import ReparamFamily
from parallel import compile_cache
from parallel.distributed import fetch_replicated

# Keys that may change between a run and its resumption; every other key is fingerprinted.
RESUMABLE_KEYS = ("outer_steps", "checkpoint_every", "log_every", "backends", "name",
                  "snapshot_every", "compile_cache", "cpu_devices")
# (cpu_devices changes the device count, which the fingerprint records as num_devices.)
# Keys added after checkpoints existed, with the value older runs implicitly used: at that
# value they are left out of the fingerprint, so those checkpoints still resume.
LATER_KEYS = {"num_groups": 1, "init_from": "", "reparam_log10_range": 0.0,
              "inner_schedule": "constant"}


def family_names(config: ml_collections.ConfigDict) -> list[str]:
    """The task families of `config.family` (one name, or several separated by commas)."""
    return list(cli.names(config.family))


def pretrained_name(config: ml_collections.ConfigDict) -> str:
    """The name the result is saved under: `config.name`, or "<lopt>_<family>[-<family>...]"."""
    return config.name or f"{config.lopt}_{'-'.join(family_names(config))}"


def validate(config: ml_collections.ConfigDict) -> None:
    """Fail fast (before any compilation) on unknown keys and unknown names."""
    valid = set(meta_base.get_config().keys())
    unknown = sorted(set(config.keys()) - valid)
    missing = sorted(valid - set(config.keys()))
    if unknown or missing:
        raise ValueError(f"meta_train config: unknown keys {unknown}, missing keys {missing}; "
                         f"valid keys: {sorted(valid)}")
    if config.lopt not in lo.list_lopts():
        raise ValueError(f"unknown lopt {config.lopt!r}; valid: {lo.list_lopts()}")
    names = family_names(config)
    if not names:
        raise ValueError(f"config.family names no family: {config.family!r}; valid: "
                         f"{models.list_families()}")
    for name in names:
        if name not in models.list_families():
            raise ValueError(f"unknown family {name!r}; valid: {models.list_families()}")
    if len(set(names)) != len(names):
        raise ValueError(f"config.family lists a family twice: {config.family!r}")
    if config.num_groups == 0 or config.num_groups < -1:
        raise ValueError(f"config.num_groups must be positive or -1 (all meta_train groups), "
                         f"got {config.num_groups}")
    if config.group_index >= 0 and (len(names) > 1 or config.num_groups != 1):
        raise ValueError(f"config.group_index={config.group_index} picks one group of one "
                         f"family; with family={config.family!r} and num_groups="
                         f"{config.num_groups} leave it at -1")
    inner_schedule = config.get("inner_schedule", "constant")
    if inner_schedule not in meta.population.INNER_SCHEDULES:
        raise ValueError(f"unknown inner_schedule {inner_schedule!r}; valid choices: "
                         f"{list(meta.population.INNER_SCHEDULES)}")
    if config.estimator not in meta.estimators.ESTIMATORS:
        raise ValueError(f"unknown estimator {config.estimator!r}; valid: "
                         f"{sorted(meta.estimators.ESTIMATORS)}")
    name = pretrained_name(config)
    if not all(c.isalnum() or c in "_-." for c in name):  # what save_pretrained accepts
        raise ValueError(f"pretrained name {name!r} (config.name) must be letters, digits, "
                         f"_ - . only")
    if config.cpu_devices < 0:
        raise ValueError(f"config.cpu_devices must be >= 0 (0: JAX's default), got "
                         f"{config.cpu_devices}")
    if config.cpu_devices and jax.default_backend() == "cpu" and (
            jax.device_count() != config.cpu_devices):
        raise ValueError(f"config.cpu_devices={config.cpu_devices} but this process has "
                         f"{jax.device_count()} CPU devices: the count is fixed when JAX "
                         f"starts (the command line sets it; in Python call "
                         f"jax.config.update('jax_num_cpu_devices', n) before using JAX)")
    if config.reparam_log10_range < 0 or config.snapshot_every < 0:
        raise ValueError(f"config.reparam_log10_range ({config.reparam_log10_range}) and "
                         f"config.snapshot_every ({config.snapshot_every}) must be >= 0")
    for key in ("num_tasks", "unroll_length", "outer_steps", "checkpoint_every", "log_every"):
        if int(config[key]) <= 0:
            raise ValueError(f"config.{key} must be positive, got {config[key]}")


def get_family(name: str, config: ml_collections.ConfigDict):
    """The family `name`, wrapped in reparameterisation augmentation when
    `config.reparam_log10_range` > 0 (parameters rescaled by 10**U(-r, r))."""
    family = models.get_family(name)
    r = float(config.reparam_log10_range)
    return ReparamFamily(family, 10.0 ** -r, 10.0 ** r) if r > 0 else family


def pick_group(family, config):
    if config.group_index >= 0:
        groups = family.groups("meta_train")
        if config.group_index >= len(groups):
            raise ValueError(f"group_index {config.group_index} out of range: family "
                             f"{family.name!r} has {len(groups)} meta_train groups")
        return groups[config.group_index]
    return family.sample_group(jax.random.key(config.seed), "meta_train")


def pick_groups(config) -> list[tuple]:
    """[(family, group)] to meta-train on: one pair for a single group, else a mixture.

    A single family with num_groups=1 uses `pick_group` (group_index or drawn from the seed);
    otherwise each family contributes num_groups distinct meta_train groups (-1: all), drawn
    without replacement from the seed.
    """
    names = family_names(config)
    if len(names) == 1 and config.num_groups == 1:
        family = get_family(names[0], config)
        return [(family, pick_group(family, config))]
    pairs = []
    for index, name in enumerate(names):
        family = get_family(name, config)
        groups = family.groups("meta_train")
        count = len(groups) if config.num_groups == -1 else config.num_groups
        if count > len(groups):
            raise ValueError(f"num_groups={config.num_groups} but family {name!r} has only "
                             f"{len(groups)} meta_train groups")
        order = jax.random.permutation(
            jax.random.fold_in(jax.random.key(config.seed), index), len(groups))
        pairs += [(family, groups[int(i)]) for i in order[:count]]
    return pairs


def build(config: ml_collections.ConfigDict):
    """(lopt, trainer, [(family, group)]) for a validated config."""
    lopt = lo.get_lopt(config.lopt, **config.lopt_kwargs.to_dict())
    schedule = meta.get_schedule(config.truncation, min_length=config.min_horizon,
                                 max_length=config.max_horizon)
    objective = meta.MetaObjective(config.objective_split, config.normalize, config.loss_clip)
    pairs = pick_groups(config)
    unrollers = [meta.TruncatedUnroller(family, group, lopt, unroll_length=config.unroll_length,
                                        schedule=schedule, objective=objective,
                                        inner_schedule=config.get("inner_schedule", "constant"))
                 for family, group in pairs]
    estimator = meta.get_estimator(config.estimator, sigma=config.sigma)
    trainer = meta.MetaTrainer(unrollers[0] if len(unrollers) == 1 else unrollers, estimator,
                               num_tasks=config.num_tasks,
                               outer_tx=meta.default_outer_tx(config.outer_lr, config.grad_clip))
    return lopt, trainer, pairs


def initial_theta(config: ml_collections.ConfigDict, lopt) -> tuple[object, dict | None]:
    """(theta, provenance) to start from: `lopt.init(seed)`, or the weights of
    `config.init_from` (a pretrained name or card path) when it is set.

    Raises:
      ValueError: the pretrained optimizer has another architecture than `config.lopt` /
        `config.lopt_kwargs` (its theta would not fit, or would mean something else).
    """
    if not config.init_from:
        return lopt.init(jax.random.key(config.seed)), None
    source_lopt, theta, card = lo.load_pretrained_theta(config.init_from)
    if source_lopt != lopt:
        raise ValueError(f"config.init_from={config.init_from!r} is a {source_lopt!r}, but this "
                         f"run meta-trains {lopt!r}: set config.lopt / config.lopt_kwargs to "
                         f"its architecture (card['architecture']: {card['architecture']})")
    provenance = {"name": card["name"], "weights_sha256": card["weights_sha256"],
                  "outer_steps": card.get("outer_steps"),
                  "total_outer_steps": card.get("total_outer_steps", card.get("outer_steps"))}
    return theta, provenance


def fingerprint(config: ml_collections.ConfigDict) -> dict:
    fp = {k: v for k, v in config.to_dict().items()
          if k not in RESUMABLE_KEYS and not (k in LATER_KEYS and v == LATER_KEYS[k])}
    fp["num_devices"] = jax.device_count()  # the population layout in the checkpoint
    return fp


def run(config: ml_collections.ConfigDict, workdir: str) -> Path:
    """Meta-train (or resume) in `workdir`; returns the path of the pretrained card.

    With `config.compile_cache` set, compiled programs are kept in (and loaded from) that
    persistent cache while this runs; the process's cache setting is restored afterwards.
    """
    start = time.time()
    validate(config)
    workdir = Path(workdir)
    cache_dir = workdir / config.compile_cache if config.compile_cache else None
    with compile_cache.enabled(cache_dir):  # before anything compiles
        return _run(config, workdir, start)


def _run(config, workdir: Path, start: float) -> Path:
    cache_before = compile_cache.counts()
    lopt, trainer, pairs = build(config)
    name = pretrained_name(config)
    ckpt = MetaCheckpointer(workdir / "checkpoints", fingerprint(config))
    ckpt.check_compatible()  # before compiling anything
    theta, init_from = initial_theta(config, lopt)  # before compiling: a bad source fails fast
    tracker = tracking.start_run(workdir, config=config, backends=tuple(config.backends))
    resumed_from = ckpt.latest_step()
    if resumed_from is not None:
        state = ckpt.restore(trainer.abstract_state(theta))
        print(f"resuming from step {resumed_from} in {workdir}", flush=True)
    else:
        state = trainer.init(jax.random.fold_in(jax.random.key(config.seed), 1), theta)
    step = int(fetch_replicated(state.step))
    bar = tqdm(total=config.outer_steps, initial=step, desc="meta-train",
               disable=jax.process_index() != 0)
    # Rows are keyed by outer steps done (1..outer_steps): every log_every-th and the last.
    # They hold the meta-metrics averaged over the interval, the state's counters as they are,
    # and speed/steps_per_s (outer steps) and speed/examples_per_s (inner task-steps).
    buffer = tracking.MetricsBuffer(
        tracker, config.log_every, config.outer_steps + 1, reduce="mean", progress=bar,
        speed=tracking.SpeedMeter(examples_per_step=trainer.total_tasks * config.unroll_length))
    startup_s = None
    while step < config.outer_steps:
        state, metrics = trainer.step(state)
        step += 1
        if startup_s is None:  # building, tracing, compiling (or loading) and one step
            jax.block_until_ready(metrics)
            startup_s = time.time() - start
            print(f"first outer step done {startup_s:.1f}s after start", flush=True)
        buffer.add(step, metrics, latest={"num_skipped": state.num_skipped,
                                          "num_resets": state.num_resets,
                                          "num_nonfinite_inner": state.num_nonfinite_inner})
        bar.update(1)
        if step % config.checkpoint_every == 0 or step == config.outer_steps:
            ckpt.save(state)
        if config.snapshot_every > 0 and step % config.snapshot_every == 0:
            save_pretrained(workdir / "snapshots", f"step_{step:06d}", lopt,
                            fetch_replicated(state.theta), {"outer_steps": step})
    buffer.flush()
    bar.close()
    ckpt.save(state)
    ckpt.close()
    env_path = workdir / "env.json"
    git = {}
    if env_path.exists():
        git = json.loads(env_path.read_text()).get("git", {})
    card = {
        "family": config.family, "group": repr(pairs[0][1]) if len(pairs) == 1 else None,
        "groups": [f"{family.name}:{group!r}" for family, group in pairs],
        "estimator": config.estimator, "sigma": config.sigma, "num_tasks": config.num_tasks,
        "total_tasks": trainer.total_tasks,
        "unroll_length": config.unroll_length, "truncation": config.truncation,
        "horizons": [config.min_horizon, config.max_horizon],
        "lopt_num_steps": trainer.unrollers[0].lopt_num_steps,
        "outer_steps": int(fetch_replicated(state.step)), "seed": config.seed,
        "init_from": init_from, "total_outer_steps": int(fetch_replicated(state.step)) + (
            (init_from or {}).get("total_outer_steps") or 0),
        "num_skipped": int(fetch_replicated(state.num_skipped)),
        "git_commit": git.get("commit"), "git_dirty": git.get("dirty"),
        "wall_time_s_last_session": time.time() - start, "resumed_from_step": resumed_from,
        "startup_s_last_session": startup_s, "compile_cache_last_session": {
            k: v - cache_before[k] for k, v in compile_cache.counts().items()},
        "devices": [str(d) for d in jax.devices()], "command": " ".join(sys.argv),
        "config": config.to_dict(),
    }
    card_path = save_pretrained(workdir, name, lopt, fetch_replicated(state.theta), card)
    tracker.log_artifact(card_path)
    tracker.finish()
    return card_path


def main(config, workdir):
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    if config.cpu_devices > 0:  # before JAX starts its backend (no effect on accelerators)
        jax.config.update("jax_num_cpu_devices", int(config.cpu_devices))
    os.makedirs(workdir, exist_ok=True)
    card = run(config, workdir)
    print(f"wrote {card}", flush=True)


if __name__ == "__main__":
    cli.run(main, config_help="meta-training config file")
