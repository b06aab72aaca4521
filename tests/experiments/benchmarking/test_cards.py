"""experiments.card_results: card figures gathered from several benchmark results files."""

import json

import pytest

from experiments import card_results
from experiments.benchmarking import cards
from experiments.configs import card_results as card_results_config

LABEL = "my_lopt"


def _entry(train, test, speedup=None, diverged=(False, False, False)):
    return {"final": {"train_loss": {"mean": train}, "test_loss": {"mean": test},
                      "test_accuracy": {"mean": 0.5}},
            "speedup": None if speedup is None else {"speedup": speedup},
            "diverged": list(diverged)}


def _record(label, origin, words, kind, ours):
    adam = _entry(1.0, 1.0, 1.0)
    record = {"label": label, "origin": origin, "family": "f",
              "distribution": {LABEL: words}, "optimizers": {"adam": adam, LABEL: ours}}
    if kind is not None:
        record["distribution_kind"] = {LABEL: kind}
    return record


IN_FAMILY = "held-out task of meta-training family f"
OOD = "out of distribution"


def _results():
    old = {"tasks": [  # an older file: words only, no distribution_kind
        _record("f/heldout0", "heldout", IN_FAMILY, None, _entry(0.5, 1.5, speedup=4.0)),
        _record("g/heldout0", "heldout", OOD, None, _entry(1.05, 1.0, speedup=1.5)),
        _record("ood/a", "ood", OOD, None, _entry(9.0, 9.0))]}
    new = {"tasks": [
        _record("ood/a", "ood", OOD, "out_of_distribution", _entry(1.0, 1.2, speedup=2.5)),
        _record("ood/b", "ood", OOD, "out_of_distribution",
                _entry(3.0, 1.05, diverged=(False, True, False))),
        {**_record("ood/c", "ood", OOD, "out_of_distribution", _entry(1.0, 1.0)),
         "optimizers": {"adam": _entry(1.0, 1.0, 1.0)}}]}  # did not run LABEL: skipped
    return [old, new]


def test_counts_split_in_family_other_family_and_ood_suite():
    counts = cards.counts(_results(), LABEL)
    assert counts["held_out_in_family"] == {
        "num_tasks": 1, "speedup_ge_2": 1, "train_loss_within_10pct_of_adam": 1,
        "test_loss_within_10pct_of_adam": 0, "diverged_tasks": 0, "median_speedup": 4.0}
    assert counts["held_out_of_other_family"]["train_loss_within_10pct_of_adam"] == 1
    assert counts["held_out_of_other_family"]["speedup_ge_2"] == 0
    # ood/a comes from the later file (speedup 2.5, train loss 1.0), ood/b diverged on a seed.
    assert counts["ood_suite"] == {
        "num_tasks": 2, "speedup_ge_2": 1, "train_loss_within_10pct_of_adam": 1,
        "test_loss_within_10pct_of_adam": 1, "diverged_tasks": 1, "median_speedup": 1.25}


def test_task_entries_and_card_update(tmp_path):
    entries = cards.task_entries(_results(), LABEL)
    assert [e["task"] for e in entries] == ["f/heldout0", "g/heldout0", "ood/a", "ood/b"]
    assert entries[2]["speedup_vs_tuned_adam_train_loss"] == 2.5
    assert entries[3]["diverged_seeds"] == 1 and entries[3]["adam_train_loss"] == 1.0
    card = {"name": LABEL, "weights_sha256": "abc",
            "heldout_results": {"summary": "prose kept", "tasks": []}}
    path = tmp_path / "card.json"
    path.write_text(json.dumps(card))
    files = []
    for i, result in enumerate(_results()):
        files.append(tmp_path / f"r{i}.json")
        files[-1].write_text(json.dumps(result))
    config = card_results_config.get_config()
    config.label, config.results = LABEL, ",".join(map(str, files))
    config.card, config.write = str(path), True
    card_results.main(config)
    updated = json.loads(path.read_text())
    assert updated["weights_sha256"] == "abc"
    assert updated["heldout_results"]["summary"] == "prose kept"
    assert updated["heldout_results"]["tasks"] == entries
    assert updated["heldout_results"]["counts"]["ood_suite"]["num_tasks"] == 2


def test_unknown_label_lists_the_optimizers_found():
    with pytest.raises(ValueError, match=r"no task .* ran 'nope'.*\['adam', 'my_lopt'\]"):
        cards.task_entries(_results(), "nope")
