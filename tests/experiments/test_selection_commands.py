"""experiments.meta_select and experiments.meta_stability end to end, at toy sizes: the
schedule reaches every run, the untrained default is a candidate, bad names fail early."""

import json

import jax
import ml_collections
import pytest

import learned_opt as lo
from experiments import meta_select, meta_stability
from experiments.configs import meta_select as meta_select_config
from experiments.configs import meta_stability as meta_stability_config
from learned_opt.pretrained import save_pretrained


def test_selection_scores_snapshots_and_the_untrained_default_under_a_schedule(tmp_path):
    lopt = lo.get_lopt("norm_mlp")
    run = tmp_path / "run"
    snapshot = jax.tree.map(lambda x: 1.01 * x, lopt.init(jax.random.key(0)))
    save_pretrained(run / "snapshots", "step_00050", lopt, snapshot, {"outer_steps": 50})
    config = meta_select_config.get_config()
    config.update(dict(run=str(run), num_tasks=1, num_seeds=1, num_steps=30, window=5,
                       learning_rates="3e-3", schedule="warmup_cosine", include_untrained=True))
    meta_select.main(config, tmp_path / "select")
    results = json.loads((tmp_path / "select" / "results.json").read_text())
    assert results["schedule"] == "warmup_cosine"
    cards = [row["card"] for row in results["snapshots"]]
    assert cards[0] == meta_select.UNTRAINED and cards[1].endswith("step_00050.json")
    assert all(abs(row["score"]) < 10 for row in results["snapshots"])
    config.schedule = "cosine"
    with pytest.raises(ValueError, match="valid choices"):
        meta_select.main(config, tmp_path / "bad")


def test_stability_run_follows_its_schedule(tmp_path):
    config = meta_stability_config.get_config()
    config.update(dict(task="logistic", num_steps=40, num_seeds=1, log_every=10,
                       schedule="warmup_cosine"))
    config.task_kwargs = ml_collections.ConfigDict()
    meta_stability.main(config, tmp_path)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["schedule"] == "warmup_cosine" and set(results["runs"]) == {"learned", "adam"}
    learned = results["runs"]["learned"][0]
    assert learned["finite"] and learned["final"] < learned["initial"]
    assert "warmup_cosine" in (tmp_path / "report.md").read_text()
