"""experiments.bench_meta at a tiny size: every row measured, breakdown present, report written."""

import json
import math

import pytest

from experiments import bench_meta
from experiments.configs import bench_meta as bench_meta_config
from experiments.measure import meta
from learned_opt import meta as meta_lib


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
    # The XLA options the step was compiled with are recorded (TBPTT on CPU: see MetaTrainer).
    assert rows[0]["compiler_options"] == meta_lib.trainer.CPU_BACKPROP_COMPILER_OPTIONS
    assert "LIBRARY_FUSION_TYPE_DOT" in report


def test_bench_meta_lopt_kwargs_build_every_lopt_and_bad_ones_fail_before_compiling():
    config = bench_meta_config.get_config()
    config.lopts = ("norm_mlp",)
    config.lopt_kwargs = "hidden_size=4, orthogonalize=False"  # as the flag gives it
    meta.validate(config)
    lopt = meta.build_lopt(config, "norm_mlp")
    assert lopt.hidden_size == 4 and not lopt.orthogonalize
    assert meta.lopt_kwargs(config) == {"hidden_size": 4, "orthogonalize": False}
    config.lopt_kwargs = "hidden_size=4,no_such_field=1.0"
    with pytest.raises(ValueError, match="bad hyperparameters for 'norm_mlp'"):
        meta.validate(config)
    config.lopt_kwargs = "hidden_size"
    with pytest.raises(ValueError, match="KEY=VALUE"):
        meta.validate(config)


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
    assert cli.keyword_args("a=4, b=False,c=x, d=1e-3") == {"a": 4, "b": False, "c": "x",
                                                            "d": 1e-3}
    assert cli.keyword_args("") == cli.keyword_args(None) == {}
    assert cli.keyword_args({"a": 1}) == {"a": 1}


def test_reference_results_give_ratios_to_the_faster_mode(tmp_path):
    from experiments.measure import meta as meta_lib

    path = tmp_path / "lo_reference_results.json"
    rows = [{"mode": "library", "estimator": "PES", "lopt": "MLPLOpt", "inner_steps_per_s": 4000},
            {"mode": "jit", "estimator": "PES", "lopt": "MLPLOpt", "inner_steps_per_s": 5000},
            {"mode": "jit", "estimator": "TBPTT", "lopt": "AdafacMLPLOpt",
             "inner_steps_per_s": 1500}]
    path.write_text(json.dumps({"meta": {"rows": rows}, "uptime_start": "load 1.0",
                                "uptime_end": "load 1.2"}))
    reference = meta_lib.read_reference(path)
    assert reference["rates"] == {("mlp", "pes"): 5000.0, ("adafac_mlp", "tbptt"): 1500.0}
    ours = [{"setup": "regression", "lopt": "mlp", "estimator": "pes",
             "inner_task_steps_per_s": 10000.0},
            {"setup": "digits", "lopt": "mlp", "estimator": "pes",
             "inner_task_steps_per_s": 10000.0}]
    ours.append({"setup": "regression", "lopt": "mlp", "estimator": "pes",
                 "lopt_kwargs": {"hidden_size": 4}, "inner_task_steps_per_s": 10000.0})
    meta_lib.attach_reference(ours, reference)
    assert ours[0]["ratio_to_reference"] == 2.0 and ours[0]["reference_mode"] == "jit"
    assert "ratio_to_reference" not in ours[1]  # the reference ran the standard setup only
    assert "ratio_to_reference" not in ours[2]  # a variant is not the reference's architecture
    path.write_text(json.dumps({"meta": {"rows": []}}))
    with pytest.raises(ValueError, match="no meta-training rows"):
        meta_lib.read_reference(path)
    with pytest.raises(ValueError, match="no such file"):
        meta_lib.read_reference(tmp_path / "missing.json")
