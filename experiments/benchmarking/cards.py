"""Benchmark figures of one learned optimizer, gathered for its pretrained card.

A card's `heldout_results` block is built from one or more `results.json` files of
`experiments.benchmark` (e.g. a held-out run and an out-of-distribution run in separate
workdirs): one entry per task (speedup, train/test loss and accuracy next to tuned Adam's,
diverged seeds) and the counts per distribution kind that `runner.headline_summary` reports.

    python -m experiments.card_results --config.label=adafac_mlp_mnist1d_mlp \
        --config.results=workdirs/b_heldout/results.json,workdirs/b_ood/results.json \
        [--config.card=learned_opt/pretrained/adafac_mlp_mnist1d_mlp.json --config.write=True]

Without `write` the command prints the block; with it, the card's `heldout_results.tasks` and
`.counts` are replaced (its prose `summary`, `commands` and `settings` are kept: edit those by
hand to match). The weights file and its sha256 are never touched.
"""

from __future__ import annotations

import json

from experiments.benchmarking.runner import headline_summary

# Card count groups: benchmark's distribution kinds, with the out-of-distribution tasks split
# into the OOD suite (the target) and held-out tasks of families it never saw.
GROUPS = {("heldout_in_family", "heldout"): "held_out_in_family",
          ("out_of_distribution", "heldout"): "held_out_of_other_family",
          ("out_of_distribution", "ood"): "ood_suite"}
# results.json files written before `distribution_kind` existed carry only the words.
_KIND_OF_WORDS = (("held-out task of meta-training family", "heldout_in_family"),
                  ("named task of meta-training family", "named_in_family"),
                  ("out of distribution", "out_of_distribution"),
                  ("not meta-trained", "not_meta_trained"))


def _with_kinds(record: dict) -> dict:
    if "distribution_kind" in record:
        return record
    kinds = {}
    for label, words in record["distribution"].items():
        kinds[label] = next(kind for prefix, kind in _KIND_OF_WORDS if words.startswith(prefix))
    return {**record, "distribution_kind": kinds}


def _mean(entry, metric):
    value = entry["final"].get(metric, {}).get("mean")
    return None if value is None else round(float(value), 4)


def task_entries(results: list[dict], label: str) -> list[dict]:
    """One dict per task of `results` that ran `label`, in file order; later files win on a
    task label that several files ran."""
    entries = {}
    for result in results:
        for record in result["tasks"]:
            entry = record["optimizers"].get(label)
            if entry is None:
                continue
            adam = record["optimizers"].get("adam", {"final": {}})
            speedup = (entry["speedup"] or {}).get("speedup")
            entries[record["label"]] = {
                "task": record["label"],
                "distribution": record["distribution"][label],
                "speedup_vs_tuned_adam_train_loss": None if speedup is None else round(speedup, 2),
                "train_loss": _mean(entry, "train_loss"),
                "adam_train_loss": _mean(adam, "train_loss"),
                "test_loss": _mean(entry, "test_loss"), "adam_test_loss": _mean(adam, "test_loss"),
                "test_accuracy": _mean(entry, "test_accuracy"),
                "adam_test_accuracy": _mean(adam, "test_accuracy"),
                "diverged_seeds": int(sum(bool(d) for d in entry["diverged"])),
            }
    if not entries:
        labels = sorted({name for r in results for t in r["tasks"] for name in t["optimizers"]})
        raise ValueError(f"no task in these results ran {label!r}; optimizers found: {labels}")
    return list(entries.values())


def _group(record: dict, label: str) -> str:
    kind = record["distribution_kind"][label]
    return GROUPS.get((kind, record["origin"]), kind)


def counts(results: list[dict], label: str) -> dict:
    """Per group of GROUPS: num_tasks, speedup_ge_2, train/test loss within 10% of Adam,
    diverged_tasks, median_speedup (never reached = 0), over the tasks of `task_entries`."""
    records = {}
    for result in results:
        for record in result["tasks"]:
            if label in record["optimizers"]:
                records[record["label"]] = _with_kinds(record)
    groups = {}
    for record in records.values():
        groups.setdefault(_group(record, label), []).append(record)
    out = {}
    for group, members in groups.items():
        (c,) = headline_summary(members, [label])[label].values()
        out[group] = {
            "num_tasks": c["num_tasks"], "speedup_ge_2": c["speedup_ge_2"],
            "train_loss_within_10pct_of_adam": c["within_10pct_of_adam"],
            "test_loss_within_10pct_of_adam": c["test_within_10pct_of_adam"],
            "diverged_tasks": c["diverged"], "median_speedup": round(c["median_speedup"], 2)}
    return out


def update_card(card: dict, results: list[dict], label: str) -> dict:
    """`card` with `heldout_results.tasks` / `.counts` rebuilt from `results` (a copy)."""
    card = json.loads(json.dumps(card))
    block = card.setdefault("heldout_results", {})
    block["tasks"] = task_entries(results, label)
    block["counts"] = counts(results, label)
    return card
