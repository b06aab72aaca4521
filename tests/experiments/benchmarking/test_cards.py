"""experiments.card_results: protocol-aware card figures gathered from several results files."""

import json

import pytest

from experiments import card_results
from experiments.benchmarking import cards
from experiments.configs import card_results as card_results_config

LABEL = "my_lopt"
PROTOCOLS = ["optimization", "generalization"]


def _run(score, speedup=None, won=False, diverged=(False, False)):
    vs = {"speedup": {"speedup": speedup, "per_seed": [speedup, speedup]},
          "normalized_loss": [0.5, 0.5], "normalized_status": ["ok", "ok"], "won": won}
    return {"score": {"mean": score}, "hparams": None, "diverged": list(diverged),
            "final": {"test_loss": {"mean": score + 1}},
            "at_best_valid": {"test_accuracy": {"mean": 0.5}},
            "vs": {"adam": vs, "adam@1e-3": vs}}


def _entry(score, **kwargs):
    return {"runs": {p: _run(score, **kwargs) for p in PROTOCOLS}}


def _record(label, origin, words, kind, ours, tuned=None):
    optimizers = {"adam": _entry(1.0, speedup=1.0), "adam@1e-3": _entry(2.0, speedup=1.0),
                  LABEL: ours}
    if tuned is not None:
        optimizers[LABEL + " (tuned lr)"] = tuned
    return {"label": label, "origin": origin, "family": "f", "distribution": {LABEL: words},
            "distribution_kind": {LABEL: kind}, "optimizers": optimizers}


IN_FAMILY = "held-out task of meta-training family f"
OOD = "out of distribution"


def _results():
    first = {"schema_version": 2, "protocols": PROTOCOLS, "tasks": [
        _record("f/heldout0", "heldout", IN_FAMILY, "heldout_in_family",
                _entry(0.5, speedup=4.0, won=True), tuned=_entry(0.4, speedup=5.0, won=True)),
        _record("g/heldout0", "heldout", OOD, "out_of_distribution", _entry(1.5)),
        _record("ood/a", "ood", OOD, "out_of_distribution", _entry(9.0))]}
    second = {"schema_version": 2, "protocols": PROTOCOLS, "tasks": [
        _record("ood/a", "ood", OOD, "out_of_distribution", _entry(0.9, speedup=2.5, won=True)),
        _record("ood/b", "ood", OOD, "out_of_distribution",
                _entry(3.0, diverged=(False, True)))]}
    return [first, second]


def test_counts_per_protocol_entry_group_and_reference():
    counts = cards.counts(_results(), LABEL, num_resamples=200)
    assert set(counts) == set(PROTOCOLS)
    default = counts["optimization"]["default"]
    assert set(default) == {"held_out_in_family", "held_out_of_other_family", "ood_suite"}
    in_family = default["held_out_in_family"]["adam"]
    assert (in_family["num_tasks"], in_family["tasks_won"], in_family["speedup_median"]) == (
        1, 1, 4.0)
    # ood/a comes from the later file (won, speedup 2.5); ood/b diverged on a seed.
    ood = default["ood_suite"]["adam@1e-3"]
    assert (ood["num_tasks"], ood["tasks_won"], ood["diverged_tasks"]) == (2, 1, 1)
    assert ood["speedup_median"] == pytest.approx(1.25)  # 2.5, 2.5, 0, 0
    assert set(counts["generalization"]["tuned_lr"]) == {"held_out_in_family"}  # tuned once
    assert counts["generalization"]["tuned_lr"]["held_out_in_family"]["adam"][
        "speedup_median"] == 5.0


def test_task_entries_and_card_update(tmp_path):
    entries = cards.task_entries(_results(), LABEL)
    assert [e["task"] for e in entries] == ["f/heldout0", "g/heldout0", "ood/a", "ood/b"]
    first = entries[0]["optimization"]
    assert first["default"]["speedup_vs_adam"] == 4.0 and first["tuned_lr"]["score"] == 0.4
    assert first["default"]["tuned_adam_score"] == 1.0
    assert first["default"]["adam_1e-3_score"] == 2.0
    assert entries[2]["generalization"]["default"]["score"] == 0.9  # the later file wins
    assert entries[3]["optimization"]["default"]["diverged_seeds"] == 1
    card = {"name": LABEL, "weights_sha256": "abc",
            "heldout_results": {"summary": "an old claim: 29x faster", "tasks": []}}
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
    block = updated["heldout_results"]
    assert block["tasks"] == entries
    # The prose is regenerated from the figures: the old claim is gone, not footnoted.
    assert "29x" not in json.dumps(block)
    assert any(line.startswith("optimization protocol, at its card's learning rate (0 trials), "
                               "vs tuned Adam on 1 held-out tasks of its meta-training family")
               for line in block["summary"])
    assert [p["results"] for p in block["provenance"]] == [str(f) for f in files]
    assert block["protocols"] == PROTOCOLS and block["results_schema_version"] == 2
    assert block["counts"]["optimization"]["default"]["ood_suite"]["adam"]["num_tasks"] == 2


def test_unknown_label_and_old_results_are_refused():
    with pytest.raises(ValueError, match=r"no task .* ran 'nope'.*'adam'.*'my_lopt'"):
        cards.task_entries(_results(), "nope")
    old = [{"tasks": []}]
    with pytest.raises(ValueError, match="schema_version None, expected 2: older files mix"):
        cards.task_entries(old, LABEL)
