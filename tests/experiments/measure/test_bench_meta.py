"""experiments.bench_meta at a tiny size: every row measured, breakdown present, report written."""

import json
import math

import pytest

from experiments import bench_meta
from experiments.configs import bench_meta as bench_meta_config
from experiments.measure import meta


def test_bench_meta_tiny_writes_results_and_report(tmp_path):
    config = bench_meta_config.get_config()
    config.update(setups=("regression",), lopts=("learned_adam",), estimators=("tbptt",),
                  steps=2, num_tasks=2, unroll_length=2, min_horizon=4, max_horizon=8)
    rows = bench_meta.main(config, str(tmp_path))
    # TBPTT: its breakdown also differentiates the lopt and task parts.
    assert [(r["lopt"], r["estimator"]) for r in rows] == [("learned_adam", "tbptt")]
    for row in rows:
        assert row["inner_task_steps_per_s"] > 0 and row["num_skipped"] == 0
        # task_ms is a difference of two medians (it excludes make_task): only finite.
        assert row["lopt_ms"] > 0 and row["make_task_ms"] > 0 and math.isfinite(row["task_ms"])
        assert row["limited_by"] in ("lopt", "task", "make_task", "other")
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(rows))
    report = (tmp_path / "report.md").read_text()
    assert "| regression | learned_adam | tbptt |" in report


def test_bench_meta_rejects_unknown_names():
    config = bench_meta_config.get_config()
    config.setups = ("cifar",)
    with pytest.raises(ValueError, match="unknown setup 'cifar'; valid"):
        meta.validate(config)


def test_bench_meta_splits_comma_separated_names():
    """`--config.lopts=mlp,adafac_mlp` reaches the config as one string inside a tuple."""
    config = bench_meta_config.get_config()
    config.lopts = ("mlp,adafac_mlp",)
    config.estimators = ("pes, tbptt",)
    meta.validate(config)
    assert config.lopts == ("mlp", "adafac_mlp") and config.estimators == ("pes", "tbptt")


def test_cli_names_accepts_every_form_the_flag_parser_gives():
    from experiments import cli

    assert cli.names("a, b,c") == cli.names(("a,b", "c")) == cli.names(["a", "b", "c"])
    assert cli.names("a, b,c") == ("a", "b", "c")
    assert cli.names(None) == cli.names("") == cli.names(()) == ()
