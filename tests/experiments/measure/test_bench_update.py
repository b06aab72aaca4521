"""experiments.bench_update (+ measure.train_step) end to end at tiny sizes, and its pure helpers.

No wall time is asserted: only that every row is measured (finite, positive), that Adam is the
unit of every ratio, and what is exact (state bytes, the roofline arithmetic, the verdict).
"""

import functools
import json
import math

import jax
import jax.numpy as jnp
import optax
import pytest

import learned_opt as lo
from experiments import bench_update
from experiments.configs import bench_update as bench_update_config
from experiments.measure import train_step, update

OPTIMIZERS = ("adam", "sgd", "muon", "adafac_mlp")  # adafac_mlp: the target optimizer


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One tiny end-to-end run: 3 optimizers, a ~3k-param update and an MLP at batch 8 (machine
    probes shrunk; they only set the roofline rates). The Transformer LM is stepped in its own
    test: AdafacMLPLOpt's per-tensor network on its 18 tensors alone compiles for ~10 s."""
    workdir = tmp_path_factory.mktemp("bench_update")
    config = bench_update_config.get_config()
    config.update(sizes=(3000,), optimizers=OPTIMIZERS, repeats=2, num_steps=10,
                  train_batches=(8,), train_widths=(16, 32, 4), train_transformer=False)
    small_probes = functools.partial(update.measure_machine, matmul_size=128,
                                     bandwidth_floats=1 << 16, tanh_size=1 << 10,
                                     mlp_size=1 << 10)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(update, "measure_machine", small_probes)
        results = bench_update.main(config, str(workdir))
    return workdir, results


def test_results_json_has_every_optimizer_and_adam_is_the_unit(tiny_run):
    workdir, results = tiny_run
    saved = json.loads((workdir / "results.json").read_text())
    assert saved == json.loads(json.dumps(results))
    for key in ("flop_rate", "bandwidth", "transcendental_rate", "per_entry_mlp_flop_rate"):
        assert math.isfinite(saved["machine"][key]) and saved["machine"][key] > 0, key
    rows = {r["optimizer"]: r for r in saved["update"]}
    assert tuple(rows) == OPTIMIZERS
    assert rows["adam"]["ratio_to_adam"] == 1.0
    # Adam keeps mu and nu (+ a scalar count); SGD keeps nothing.
    assert rows["adam"]["state_bytes_per_param"] == pytest.approx(8.0, abs=0.01)
    assert rows["sgd"]["state_bytes_per_param"] == pytest.approx(0.0, abs=0.01)
    for name, row in rows.items():
        assert row["num_params"] == sum(a * b for a, b in update.layer_shapes(3000))
        for key in ("update_ms", "ratio_to_adam", "ratio_to_roofline",
                    "ratio_to_roofline_with_transcendentals", "min_bytes_per_param"):
            assert math.isfinite(row[key]) and row[key] > 0, (name, key)
        assert row["bound"] in ("compute", "memory")
    # the learned optimizer does more arithmetic than Adam, and SGD touches no state
    assert rows["adafac_mlp"]["flops_per_param"] > rows["adam"]["flops_per_param"] > 0
    assert rows["sgd"]["min_bytes_per_param"] == pytest.approx(8.0, abs=0.01)  # grads + updates
    assert rows["adam"]["min_bytes_per_param"] == pytest.approx(24.0, abs=0.01)


def _check_train_rows(rows, model, batch, optimizers):
    assert [(r["model"], r["batch"], r["optimizer"]) for r in rows] == [
        (model, batch, name) for name in optimizers]
    for row in rows:
        assert math.isfinite(row["step_ms"]) and row["step_ms"] > 0
        assert row["fwd_bwd_gflop"] > 0 and row["fwd_bwd_flops_per_param"] > 0
        assert row["update_gflop"] > 0 and row["flop_ratio_to_adam"] > 0
        if row["optimizer"] == "adam":
            assert row["ratio_to_adam"] == 1.0 and row["flop_ratio_to_adam"] == 1.0
        if "muon" in optimizers:  # Muon is the second unit of the train-step table
            assert row["ratio_to_muon"] > 0
            if row["optimizer"] == "muon":
                assert row["ratio_to_muon"] == 1.0


def test_mlp_train_step_rows_report_and_target_verdict(tiny_run):
    workdir, results = tiny_run
    rows = results["train_step"]
    _check_train_rows(rows, "mlp", "8", OPTIMIZERS)
    assert rows[0]["num_params"] == 16 * 32 + 32 + 32 * 4 + 4
    adafac = rows[-1]
    assert adafac["update_gflop"] > rows[0]["update_gflop"]  # more arithmetic than Adam's
    verdict = results["train_step_target"]
    assert verdict == train_step.target_summary(rows)
    assert verdict.startswith("Target `adafac_mlp` train step <= 1.3x Adam: ")
    assert f"mlp 8 ({adafac['ratio_to_adam']:.2f}x)" in verdict
    report = (workdir / "report.md").read_text()
    num_params = results["update"][0]["num_params"]
    assert f"| adafac_mlp | {num_params:,} |" in report  # the update table
    assert "| mlp | 8 | 676 |" in report and verdict in report  # the train-step table


def test_transformer_train_step_on_the_zoo_lm():
    config = bench_update_config.get_config()
    config.update(optimizers=("adam", "learned_adam"), repeats=2, num_steps=10)
    config.transformer.update(seq_len=8, d_model=16, num_heads=2, num_layers=1, batch_size=2)
    model = train_step.transformer_model(config, jax.random.key(0))
    assert model["examples"] == 16
    rows = train_step.bench_train_step(config, model)
    _check_train_rows(rows, "transformer", "2x8", ("adam", "learned_adam"))
    # a language model reuses each weight at every token (examples = 16 tokens, not 2
    # sequences): fwd+bwd do ~6 FLOPs per weight per token, less on the embedding gathers
    assert rows[0]["fwd_bwd_flops_per_param"] > 3 * model["examples"]
    assert "| transformer | 2x8 |" in "\n".join(train_step.format_train_table(rows))


def test_roofline_is_the_larger_of_flop_and_byte_time():
    machine = {"flop_rate": 1e9, "bandwidth": 2e9}
    assert update.roofline(3e9, 2e9, machine) == (3.0, 1.0, "compute")
    assert update.roofline(1e9, 8e9, machine) == (1.0, 4.0, "memory")


def test_update_row_ratios_from_known_numbers():
    machine = {"flop_rate": 1e9, "bandwidth": 1e9, "transcendental_rate": 1e8}
    run = {"flops": 1e9, "min_bytes": 4e9, "transcendentals": 1e9, "state_bytes": 8e3,
           "xla_bytes": 5e9}
    row = update.update_row("x", 1000, median=8.0, adam_median=2.0, run=run,
                                  machine=machine)
    assert row["ratio_to_adam"] == 4.0 and row["update_ms"] == 8000.0
    assert row["state_bytes_per_param"] == 8.0 and row["xla_bytes_per_param"] == 5e6
    assert (row["roofline_flops_ms"], row["roofline_bytes_ms"], row["bound"]) == (
        1000.0, 4000.0, "memory")
    assert row["ratio_to_roofline"] == 2.0  # 8 s / max(1 s, 4 s)
    # with the 10 s of tanh the compute side (1 + 10 s) outweighs the 4 s of bytes
    assert row["roofline_transcendentals_ms"] == 10000.0
    assert row["ratio_to_roofline_with_transcendentals"] == pytest.approx(8.0 / 11.0)


def test_target_summary_splits_met_and_missed_at_the_target():
    rows = [{"model": "mlp", "batch": b, "optimizer": o, "ratio_to_adam": r}
            for b, o, r in [("128", "adafac_mlp", 1.9), ("512", "adafac_mlp", 1.3),
                            ("2048", "adafac_mlp", 1.1), ("128", "lstm", 1.0)]]
    assert train_step.target_summary(rows) == (
        "Target `adafac_mlp` train step <= 1.3x Adam: met on mlp 512 (1.30x), mlp 2048 (1.10x);"
        " missed on mlp 128 (1.90x).")
    assert train_step.target_summary(rows, optimizer="hyper").endswith(
        "not measured (`hyper` is not in config.optimizers).")


def test_uses_params_tells_which_updates_read_the_params():
    params = {"w": jnp.ones((4, 3))}
    for tx, reads in [(optax.adam(1e-3), False), (optax.adamw(1e-3), True)]:
        state = tx.init(params)
        assert update._uses_params(tx, params, state, params, jnp.float32(1.0)) is reads


def test_layer_shapes_and_default_optimizers():
    shapes = update.layer_shapes(1_000_000)
    assert shapes == [(1000, 500), (500, 500), (500, 500)]
    assert sum(a * b for a, b in shapes) == 1_000_000
    config = bench_update_config.get_config()
    assert tuple(config.optimizers) == ("adam", "sgd", "muon", *lo.list_lopts())


def test_bad_optimizer_lists_fail_before_measuring():
    config = bench_update_config.get_config()
    config.optimizers = ("adam, adafac_mlp",)  # what `--config.optimizers=adam,adafac_mlp` gives
    update.validate(config)
    assert tuple(config.optimizers) == ("adam", "adafac_mlp")
    config.optimizers = ("sgd", "mlp")
    with pytest.raises(ValueError, match="lacks 'adam'"):
        update.validate(config)
    config.optimizers = ("adam", "velo")
    with pytest.raises(ValueError, match=r"unknown optimizers \['velo'\].*'adafac_mlp'"):
        update.validate(config)
    config.optimizers = ("adam", "pretrained:norm_mlp_mix")  # a shipped one, as its card runs it
    update.validate(config)
    with pytest.raises(ValueError, match=r"unknown optimizers \['pretrained:nope'\]"):
        config.optimizers = ("adam", "pretrained:nope")
        update.validate(config)
    tx = train_step.make_optimizer("pretrained:norm_mlp_mix", num_steps=10)
    params = {"w": jnp.ones((4, 3))}
    updates, _ = tx.update(params, tx.init(params), params)
    assert updates["w"].shape == (4, 3) and bool(jnp.all(jnp.isfinite(updates["w"])))
    assert "not measured" in train_step.target_summary(
        [{"optimizer": "mlp", "model": "mlp", "batch": "128", "ratio_to_adam": 2.0}])
