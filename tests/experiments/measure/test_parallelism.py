"""experiments.parallelism end to end on tiny configs: outputs exist and say what the library
tests prove (equivalence, gradient-sized all-reduce, async rows)."""

import json

import pytest

from experiments.configs import parallelism as parallelism_config
from experiments.measure import parallelism


def tiny_config(mode):
    config = parallelism_config.get_config()
    config.mode = mode
    config.timing_repeats = 1
    config.dp.optimizers = ("adam",)
    config.dp.num_steps = 2
    config.dp.batch_size = 16
    config.dp.task = "logistic"  # the smallest zoo task: the script's wiring is under test here
    a = config.async_sgd
    a.task = "logistic"
    a.num_workers, a.sync_workers, a.wall_clock_budget = (2,), 2, 4.0
    a.fixed_staleness, a.fixed_updates = (2,), 10
    return config


@pytest.mark.slow
def test_dp_mode_writes_equivalence_and_communication(tmp_path):
    results = parallelism.run(tiny_config("dp"), tmp_path)
    rows = {row["form"]: row for row in results["rows"]}
    assert set(rows) == {"single_device", "pmap", "jit", "shard_map", "jit_fsdp"}
    for form in ("pmap", "jit", "shard_map", "jit_fsdp"):
        assert rows[form]["max_param_diff"] < 1e-5, rows[form]
    # Gradients of every param plus the scalar loss, in one all-reduce.
    assert rows["jit"]["comm_bytes"] == results["param_bytes"] + 4
    assert json.loads((tmp_path / "results.json").read_text())["rows"] == results["rows"]
    assert "| adam | jit |" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "metrics.jsonl").read_text().count('"step"') == 4


@pytest.mark.slow
def test_async_mode_writes_rows_plots_and_report(tmp_path):
    results = parallelism.run(tiny_config("async"), tmp_path)
    names = [row["config"] for row in results["rows"]]
    assert names == ["sync", "sync_scaled_lr", "sync_straggler", "async_2", "async_2_inverse",
                     "async_straggler"]
    rows = dict(zip(names, results["rows"], strict=True))
    # Within the same wall-clock, two async workers land about twice the sync updates, and a
    # straggler slows sync SGD down.
    assert rows["async_2"]["updates"] > rows["sync"]["updates"] > rows["sync_straggler"]["updates"]
    assert rows["sync"]["max_staleness"] == 0 and rows["async_2"]["max_staleness"] >= 1
    for name in ("async_loss.png", "async_staleness.png", "report.md", "results.json"):
        assert (tmp_path / name).stat().st_size > 0


@pytest.mark.slow
def test_pp_mode_writes_counted_bubbles_memory_and_times(tmp_path):
    """--mode pp runs experiments.measure.pipeline: bubbles counted from the schedule tables equal
    (p-1)/(m+p-1) for both schedules, 1F1B holds min(p, m) micro-batches and its compiled temp
    memory stays flat as m grows while GPipe's grows."""
    config = tiny_config("pp")
    config.pp.update(bubble_stages="2,3", bubble_microbatches="1,5", num_stages=2, width=8,
                     hidden=16, microbatch_size=4, memory_microbatches="2,6",
                     timing_microbatches="2", timing_repeats=1)
    results = parallelism.run(config, tmp_path)
    for row in results["bubble"]:
        assert row["gpipe_counted"] == pytest.approx(row["gpipe_formula"])
        assert row["1f1b_counted"] == pytest.approx(row["gpipe_formula"])
        assert row["1f1b_max_live"] == min(row["num_stages"], row["num_microbatches"])
        assert row["gpipe_max_live"] == row["num_microbatches"]
    # Compiled temp memory (the batch is an argument, not temp) with a fixed micro-batch size:
    # 1F1B's is flat in m, GPipe's grows with m (it keeps every micro-batch's activations).
    small, large = results["memory"]
    assert large["1f1b_temp_bytes"] == small["1f1b_temp_bytes"]
    assert large["gpipe_temp_bytes"] >= 1.5 * small["gpipe_temp_bytes"]
    assert large["gpipe_temp_bytes"] > 2 * large["1f1b_temp_bytes"]
    assert large["gpipe_slope"] > 1 and large["1f1b_slope"] == 0
    assert results["step_time"][0]["1f1b_masked_s"] > 0
    assert json.loads((tmp_path / "results.json").read_text())["bubble"] == results["bubble"]
    for name in ("report.md", "pipeline.png", "config.json", "env.json", "metrics.jsonl"):
        assert (tmp_path / name).is_file(), name


def test_unknown_mode_is_named(tmp_path):
    config = tiny_config("dp")
    config.mode = "zp"
    with pytest.raises(ValueError, match=r"mode must be one of \('dp', 'tp', 'async', 'pp'\)"):
        parallelism.run(config, tmp_path)
