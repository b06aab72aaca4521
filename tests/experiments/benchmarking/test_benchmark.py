"""Benchmark machinery: speedup math on known curves, the jitted training loop against a plain
Python loop, seeds, the split discipline, results.json's schema, and bad names."""

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from bench_fakes import FakeTask

from experiments.benchmarking import metrics as bm
from experiments.benchmarking import report as benchmark_report
from experiments.benchmarking import results as results_lib
from experiments.benchmarking import runner, tuning
from experiments.benchmarking import suite as benchmark_suite
from learned_opt import training

STEPS, EVAL_EVERY = 40, 20


# ---- speedup and summaries on synthetic curves ------------------------------------------------


def test_smooth_is_a_trailing_mean():
    assert bm.smooth(np.array([1.0, 2, 3, 4]), 2) == pytest.approx([1.0, 1.5, 2.5, 3.5])
    assert bm.smooth(np.array([4.0, 2.0]), 10) == pytest.approx([4.0, 3.0])


def test_speedup_on_curves_with_a_known_answer():
    adam = np.linspace(1.0, 0.5, 100)  # reaches its final 0.5 only at its last step (100)
    fast = np.concatenate([np.linspace(1.0, 0.5, 25), np.full(75, 0.4)])  # 0.5 at step 25
    result = bm.speedup_of(adam, fast, window=1)
    assert result.target == pytest.approx(0.5)
    assert (result.adam_steps, result.steps) == (100, 25)
    assert result.speedup == pytest.approx(4.0)
    slow = np.linspace(1.0, 0.6, 100)
    assert bm.speedup_of(adam, slow, window=1).speedup is None  # never reached: no number
    # Adam's own curve dips below its final value at step 50: its steps count from there.
    bumpy = np.concatenate([np.linspace(1.0, 0.5, 50), np.full(50, 0.6)])
    assert bm.speedup_of(bumpy, bumpy, window=1) == (0.6, 41, 41, 1.0)


def test_speedup_smoothing_ignores_a_single_lucky_batch():
    adam = np.linspace(1.0, 0.5, 100)
    lucky = np.full(100, 0.9)
    lucky[10] = 0.0  # one minibatch far below the target
    assert bm.speedup_of(adam, lucky, window=1).steps == 11
    assert bm.speedup_of(adam, lucky, window=20).speedup is None


def test_nan_curves_never_reach_and_are_counted_not_averaged():
    assert bm.speedup_of(np.array([1.0, np.nan]), np.array([1.0, 0.1]), 1).speedup is None
    stats = bm.summarize([1.0, np.nan, 3.0])
    assert (stats["n"], stats["n_finite"], stats["mean"]) == (3, 2, 2.0)
    assert bm.summarize([np.inf])["mean"] is None
    assert bm.diverged(np.array([1.0, np.inf]), 1)
    assert bm.diverged(np.array([1.0, 2.0, 3.0]), 1)
    assert not bm.diverged(np.array([1.0, 0.5, 0.4]), 2)


# ---- the training loop --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def adam_run():
    task = FakeTask()
    run = training.make_run_fn(task, lambda lr: optax.adam(lr), num_steps=STEPS,
                                 eval_every=EVAL_EVERY, eval_splits=("valid",),
                                 full_split_eval=True, keep_snapshots=True)
    return task, run


def test_scan_loop_matches_a_python_loop(adam_run):
    task, run = adam_run
    curves = jax.device_get(run(jnp.float32(0.05), training.seed_keys([3])))
    init_key, train_key, _ = jax.random.split(jax.random.key(3), 3)
    params = task.init(init_key)
    tx = optax.adam(0.05)
    state = tx.init(params)
    losses = []
    loss_and_grad = jax.jit(jax.value_and_grad(task.loss))
    for step in range(STEPS):
        batch = task.sample_batch(jax.random.fold_in(train_key, step), "train")
        loss, grads = loss_and_grad(params, batch)
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        losses.append(float(loss))
    np.testing.assert_allclose(curves.train_loss[0], losses, rtol=1e-5, atol=1e-6)
    final_valid = task.loss(params, task.full_split("valid"))
    assert curves.evals["valid"]["loss"][0, -1] == pytest.approx(float(final_valid), rel=1e-5)
    assert list(curves.eval_steps) == [0, 20, 40]


def test_same_seed_reproduces_other_seeds_differ(adam_run):
    _, run = adam_run
    a = jax.device_get(run(jnp.float32(0.05), training.seed_keys([0, 1])))
    b = jax.device_get(run(jnp.float32(0.05), training.seed_keys([0, 1])))
    np.testing.assert_array_equal(a.train_loss, b.train_loss)
    assert not np.allclose(a.train_loss[0], a.train_loss[1])
    c = jax.device_get(run(jnp.float32(0.05), training.seed_keys([1, 2])))
    np.testing.assert_array_equal(a.train_loss[1], c.train_loss[0])  # seeds are independent


def test_eval_fn_on_snapshots_agrees_with_the_loop_and_reads_test(adam_run):
    task, run = adam_run
    keys = training.seed_keys([0, 1])
    curves = run(jnp.float32(0.05), keys)
    assert "test" not in set(task.requested_splits)
    evals = training.make_eval_fn(task, ("train", "valid", "test"), full_split_eval=True)(
        curves.snapshots, keys)
    np.testing.assert_allclose(evals["valid"]["loss"], curves.evals["valid"]["loss"], rtol=1e-6)
    assert evals["test"]["accuracy"].shape == (2, 3)
    assert float(evals["test"]["accuracy"][:, -1].mean()) > 0.7  # it learned something


def test_loop_rejects_bad_arguments():
    with pytest.raises(ValueError, match="multiple of eval_every"):
        training.make_run_fn(FakeTask(), optax.sgd, num_steps=30, eval_every=20)
    with pytest.raises(ValueError, match="unknown eval split 'tst'"):
        training.make_run_fn(FakeTask(), optax.sgd, num_steps=20, eval_every=20,
                               eval_splits=("tst",))


# ---- the benchmark end to end on a tiny suite ------------------------------------------------


def tiny_config():
    config = ml_collections.ConfigDict({
        "tasks": "", "heldout_families": "", "ood": False, "baselines": "sgd,adam",
        "learned": "default:learned_adam", "lopt_init_seed": 0, "num_steps": STEPS,
        "eval_every": EVAL_EVERY, "eval_batches": 1, "full_split_eval": True, "seeds": (0, 1),
        "smoothing_window": 5, "curve_stride": 5,
        "tuning": {"sampler": "grid", "grid_points": 2, "weight_decay_points": 1,
                   "num_trials": 2, "seeds": (5, 6), "last_k": 1, "sampler_seed": 0}})
    return config


class RecordingTracker:
    def __init__(self):
        self.metrics, self.artifacts, self.params = [], [], {}

    def log_params(self, params):
        self.params.update(params)

    def log_metrics(self, step, metrics):
        self.metrics.append((step, dict(metrics)))

    def log_artifact(self, path):
        self.artifacts.append(str(path))

    def finish(self):
        pass


@pytest.mark.slow
def test_tiny_benchmark_writes_a_valid_results_json(tmp_path, monkeypatch):
    task = FakeTask(name="fake")
    suite = [benchmark_suite.SuiteTask("fake/heldout0", task, "heldout", "fake_family")]
    monkeypatch.setattr(benchmark_suite, "build_suite", lambda config: suite)
    tracker = RecordingTracker()
    results = runner.run_benchmark(tiny_config(), tmp_path, tracker)
    paths = results_lib.write_results(results, tmp_path, tracker)
    loaded = json.loads((tmp_path / "results.json").read_text())
    results_lib.check_results_schema(loaded)
    record = loaded["tasks"][0]
    assert set(record["optimizers"]) == {"sgd", "adam", "learned_adam (untrained default)"}
    assert record["optimizers"]["adam"]["speedup"]["speedup"] == 1.0
    assert record["distribution"] == {"learned_adam (untrained default)": "not meta-trained"}
    assert record["zero_rule_accuracy"] == task.dataset_info()["zero_rule_accuracy"]
    adam = record["optimizers"]["adam"]
    assert adam["tuning"]["num_trials"] == 2 and adam["final"]["test_loss"]["n"] == 2
    assert adam["final"]["train_loss"]["mean"] < np.log(2)  # trained below chance level
    assert (tmp_path / "optuna.db").exists()
    assert {p.name for p in paths} >= {"results.json", "report.md", "speedup.png",
                                       "curves_fake_heldout0.png"}
    assert "fake/heldout0" in (tmp_path / "report.md").read_text()
    assert len(tracker.artifacts) == len(paths) and tracker.metrics
    broken = dict(loaded, tasks=[dict(record, optimizers={"adam": {"kind": "baseline"}})])
    with pytest.raises(ValueError, match="optimizer adam: missing key"):
        results_lib.check_results_schema(broken)

    # Tuning reused from this workdir: no trial runs again, same hyperparameters, source intact.
    source_bytes = (tmp_path / "optuna.db").read_bytes()
    config = tiny_config()
    config.tuning.reuse_from = str(tmp_path)

    def no_trials(*args, **kwargs):
        raise AssertionError("a tuning trial ran although its study was reused")

    monkeypatch.setattr(tuning, "validation_objective", no_trials)
    again = runner.run_benchmark(config, tmp_path / "again", RecordingTracker())
    assert again["settings"]["tuning_reused_from"] == str((tmp_path / "optuna.db").resolve())
    for name in ("sgd", "adam"):
        assert again["tasks"][0]["optimizers"][name]["hparams"] == record["optimizers"][name][
            "hparams"]
    assert (tmp_path / "optuna.db").read_bytes() == source_bytes
    with pytest.raises(ValueError, match="no Optuna database"):
        runner.reuse_tuning(str(tmp_path / "missing"), tmp_path / "other")


def test_unknown_names_list_the_valid_ones():
    config = ml_collections.ConfigDict({"tasks": "digits_mpl", "heldout_families": "",
                                        "ood": False})
    with pytest.raises(ValueError, match="valid tasks: .*digits_mlp"):
        benchmark_suite.build_suite(config)
    config.tasks, config.heldout_families = "", "nope"
    with pytest.raises(ValueError, match="valid families: .*digits_mlp"):
        benchmark_suite.build_suite(config)
    with pytest.raises(ValueError, match="valid: .*mlp"):
        benchmark_suite.resolve_learned("default:mpl", num_steps=10)
    with pytest.raises(ValueError, match="KIND:NAME"):
        benchmark_suite.resolve_learned("mlp", num_steps=10)


def test_checkpoint_spec_knows_its_meta_training_family(tmp_path):
    import learned_opt as lo
    from learned_opt.pretrained import save_pretrained

    lopt = lo.get_lopt("learned_adam")
    card = save_pretrained(tmp_path, "la_digits", lopt, lopt.init(jax.random.key(1)),
                           {"family": "digits_mlp"})
    spec = benchmark_suite.resolve_learned(f"checkpoint:{card}", num_steps=STEPS)
    assert spec.meta_families == ("digits_mlp",) and spec.label == "la_digits (checkpoint)"
    heldout = benchmark_suite.SuiteTask("d/heldout0", FakeTask(), "heldout", "digits_mlp")
    other = benchmark_suite.SuiteTask("m/heldout0", FakeTask(), "heldout", "mnist1d_mlp")
    ood = benchmark_suite.SuiteTask("ood/x", FakeTask(), "ood", None)
    labels = [benchmark_suite.distribution_label(t, spec) for t in (heldout, other, ood)]
    assert labels == ["held-out task of meta-training family digits_mlp",
                      "out of distribution", "out of distribution"]
    kinds = [benchmark_suite.distribution_kind(t, spec) for t in (heldout, other, ood)]
    assert kinds == ["heldout_in_family", "out_of_distribution", "out_of_distribution"]
    (tmp_path / "la_digits.msgpack").write_bytes(b"not msgpack")
    with pytest.raises(ValueError, match="corrupt"):
        benchmark_suite.resolve_learned(f"checkpoint:{card}", num_steps=STEPS)
    with pytest.raises(ValueError, match="is not a file"):
        benchmark_suite.resolve_learned(f"checkpoint:{tmp_path / 'missing.json'}", num_steps=5)


def _fake_record(kind, speedup, train, adam_train, test, adam_test, diverged=False):
    def entry(train_loss, test_loss, speedup_value, diverged_flag):
        return {"final": {"train_loss": {"mean": train_loss}, "test_loss": {"mean": test_loss}},
                "speedup": None if speedup_value is False else {"speedup": speedup_value},
                "diverged": [diverged_flag, False]}
    return {"distribution_kind": {"lo": kind},
            "optimizers": {"adam": entry(adam_train, adam_test, 1.0, False),
                           "lo": entry(train, test, speedup, diverged)}}


def test_headline_summary_groups_by_each_optimizers_distribution():
    records = [
        _fake_record("heldout_in_family", 3.0, 0.5, 1.0, 1.2, 1.0),     # win, test 20% worse
        _fake_record("heldout_in_family", 1.5, 1.05, 1.0, 1.05, 1.0),   # no win, within 10%
        _fake_record("out_of_distribution", None, 2.0, 1.0, 2.0, 1.0),  # never reached
        _fake_record("out_of_distribution", 2.5, 0.9, 1.0, 0.9, 1.0, diverged=True),
    ]
    summary = runner.headline_summary(records, ["lo"])["lo"]
    heldout, ood = summary["heldout_in_family"], summary["out_of_distribution"]
    assert heldout["num_tasks"] == 2 and heldout["reached_adam_target"] == 2
    assert heldout["speedup_ge_2"] == 1
    assert (heldout["within_10pct_of_adam"], heldout["test_within_10pct_of_adam"]) == (2, 1)
    assert heldout["median_speedup"] == pytest.approx(2.25)
    assert (ood["speedup_ge_2"], ood["reached_adam_target"], ood["diverged"]) == (1, 1, 1)
    assert ood["median_speedup"] == pytest.approx(1.25)  # never reached counts as 0
    assert "median 2.25x" in benchmark_report.headline_text({"summary": {"lo": summary}})
