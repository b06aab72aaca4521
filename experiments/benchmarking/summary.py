"""Aggregates of a benchmark's task records, per protocol, optimizer and reference.

For each protocol, each optimizer (its track recorded beside it) and each reference (tuned Adam
"adam", Adam at 1e-3 "adam@1e-3"), over the tasks of a group ("all"; for a learned optimizer
also each `suite.DISTRIBUTION_KINDS` entry it has tasks in):
  tasks_won / fraction_won   seed-mean protocol score strictly below the reference's
  reached_target             tasks on which the seed-mean curve reached the reference's target
  diverged_tasks             tasks with at least one diverged seed
  speedup                    `stats.describe` over tasks x seeds (never reached = 0)
  normalized_loss            `stats.describe` over tasks x seeds (diverged = +inf; seeds whose
                             reference did not improve are left out, counted in `n_no_scale`)
  num_seeds / single_seed    final seeds per task; a single seed is flagged (no headline)
and per protocol and track the score table of the performance profile (`profiles`).

    summary = summarize(records, ("optimization",), num_resamples=2000, seed=0)
    summary["by_protocol"]["optimization"]["mlp_digits_mlp"]["groups"]["all"]["adam"]["speedup"]
"""

from __future__ import annotations

import math

import numpy as np

from experiments.benchmarking import stats


def _speedup_sample(vs) -> list[float]:
    return [0.0 if s is None else float(s) for s in vs["speedup"]["per_seed"]]


def _normalized_sample(vs) -> tuple[list[float], int]:
    values, no_scale = [], 0
    for value, status in zip(vs["normalized_loss"], vs["normalized_status"], strict=True):
        if status == "no_scale":
            no_scale += 1
        else:
            values.append(math.inf if status == "diverged" else float(value))
    return values, no_scale


def aggregate(runs: list[dict], reference: str, *, num_resamples: int = 2000,
              seed: int = 0) -> dict:
    """The aggregate of one optimizer against `reference` over protocol runs (one per task)."""
    speedups, normalized, no_scale = [], [], 0
    won = reached = diverged = 0
    num_seeds = sorted({len(run["diverged"]) for run in runs})
    for run in runs:
        vs = run["vs"][reference]
        speedups += _speedup_sample(vs)
        values, missing = _normalized_sample(vs)
        normalized += values
        no_scale += missing
        won += int(vs["won"])
        reached += int(vs["speedup"]["speedup"] is not None)
        diverged += int(any(run["diverged"]))
    options = {"num_resamples": num_resamples, "seed": seed}
    return {
        "num_tasks": len(runs), "num_seeds": num_seeds, "single_seed": num_seeds == [1],
        "tasks_won": won, "fraction_won": won / len(runs) if runs else None,
        "reached_target": reached, "diverged_tasks": diverged,
        "speedup": stats.describe(speedups, **options),
        "normalized_loss": stats.describe(normalized, **options) | {"n_no_scale": no_scale},
    }


def _groups(records: list[dict], label: str) -> dict[str, list[dict]]:
    """"all" plus, for a learned optimizer, its distribution kinds: group -> task records."""
    groups = {"all": []}
    for record in records:
        entry = record["optimizers"].get(label)
        if entry is None:
            continue
        groups["all"].append(record)
        learned = entry.get("learned_label")
        if learned:
            groups.setdefault(record["distribution_kind"][learned], []).append(record)
    return groups


def summarize(records: list[dict], protocols, *, num_resamples: int = 2000,
              seed: int = 0) -> dict:
    """{"by_protocol": {protocol: {label: {kind, track, num_trials, groups: {group: {reference:
    aggregate}}}}}, "profiles": {protocol: {track: {labels, tasks, costs}}}} (module docstring)."""
    labels = list(dict.fromkeys(lbl for r in records for lbl in r["optimizers"]))
    out = {}
    for protocol in protocols:
        per_label = {}
        for label in labels:
            groups = _groups(records, label)
            first = groups["all"][0]["optimizers"][label]
            references = [ref for ref in first["runs"][protocol]["vs"] if ref != label]
            per_label[label] = {
                "kind": first["kind"], "track": first["track"],
                "num_trials": [r["optimizers"][label]["num_trials"] for r in groups["all"]],
                "groups": {group: {ref: aggregate(
                    [r["optimizers"][label]["runs"][protocol] for r in members], ref,
                    num_resamples=num_resamples, seed=seed) for ref in references}
                    for group, members in groups.items()}}
        out[protocol] = per_label
    return {"by_protocol": out,
            "profiles": {protocol: profile_tables(records, protocol) for protocol in protocols}}


def profile_tables(records: list[dict], protocol: str) -> dict:
    """Per track: the (tasks x optimizers) seed-mean protocol scores (null = not finite) that
    the performance profile is drawn from; only tasks every optimizer of the track ran."""
    tracks: dict[str, list[str]] = {}
    for record in records:
        for label, entry in record["optimizers"].items():
            if label not in tracks.setdefault(entry["track"], []):
                tracks[entry["track"]].append(label)
    out = {}
    for track, labels in tracks.items():
        rows = [r for r in records if all(lbl in r["optimizers"] for lbl in labels)]
        costs = [[r["optimizers"][lbl]["runs"][protocol]["score"]["mean"] for lbl in labels]
                 for r in rows]
        out[track] = {"labels": labels, "tasks": [r["label"] for r in rows], "costs": costs}
    return out


def profile_curve(table: dict, taus) -> np.ndarray:
    """rho (optimizers x taus) of a `profile_tables` entry: the performance profile."""
    costs = np.array([[math.inf if v is None else v for v in row] for row in table["costs"]],
                     dtype=np.float64)
    return stats.performance_profile(costs, taus)


def summarize_results(records: list[dict], spec) -> dict:
    """`summarize` with the spec's protocols and bootstrap settings."""
    return summarize(records, spec.protocols, num_resamples=spec.bootstrap_resamples,
                     seed=spec.bootstrap_seed)
