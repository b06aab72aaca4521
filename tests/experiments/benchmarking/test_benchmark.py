"""Benchmark machinery: speedup math on known curves, the jitted training loop against a plain
Python loop, seeds, and the protocols end to end (results.json's schema, which protocol picks
which rate, tuning-free runs); bad input in test_spec.py."""

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from bench_fakes import FakeTask, TwoTargetTask, fixed_learned_spec

from experiments.benchmarking import metrics as bm
from experiments.benchmarking import results as results_lib
from experiments.benchmarking import runner
from experiments.benchmarking import suite as benchmark_suite
from experiments.benchmarking.spec import BenchmarkSpec
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
    assert (result.reference_steps, result.steps) == (100, 25)
    assert result.speedup == pytest.approx(4.0)
    slow = np.linspace(1.0, 0.6, 100)
    assert bm.speedup_of(adam, slow, window=1).speedup is None  # never reached: no number
    # Adam's own curve dips below its final value at step 50: its steps count from there.
    bumpy = np.concatenate([np.linspace(1.0, 0.5, 50), np.full(50, 0.6)])
    assert bm.speedup_of(bumpy, bumpy, window=1) == (0.6, 41, 41, 1.0)


def test_eval_speedup_targets_the_references_best_valid_loss():
    steps = np.array([0, 10, 20, 30])
    reference = np.array([1.0, 0.5, 0.4, 0.45])  # best 0.4 at step 20
    fast = np.array([1.0, 0.3, 0.6, 0.7])        # below 0.4 at step 10, then overfits
    assert bm.eval_speedup_of(reference, fast, steps) == (0.4, 20, 10, 2.0)
    assert bm.eval_speedup_of(reference, np.array([1.0, 0.9, 0.8, 0.5]), steps).speedup is None
    assert bm.normalized_loss(0.5, 2.0, 1.0) == -0.5  # better than the reference
    assert bm.normalized_loss(np.inf, 2.0, 1.0) == np.inf
    assert np.isnan(bm.normalized_loss(0.5, 1.0, 1.0))  # the reference did not move: no scale


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


# ---- the benchmark end to end on tiny suites ---------------------------------------------------


def tiny_config(**overrides):
    config = ml_collections.ConfigDict({
        "protocol": "both", "tasks": "", "heldout_families": "", "ood": False,
        "baselines": "adam", "tuning_free": "", "learned": "fake", "learned_tuning": "auto",
        "schedule": "constant", "num_steps": STEPS, "eval_every": 5, "eval_batches": 1,
        "full_split_eval": True, "seeds": (0, 1), "smoothing_window": 5, "curve_stride": 5,
        "bootstrap_resamples": 200,
        "tuning": {"sampler": "grid", "grid_points": 7, "weight_decay_points": 1,
                   "num_trials": 2, "seeds": (5, 6), "last_k": 1, "sampler_seed": 0}})
    config.update(overrides)
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


def run_tiny(tmp_path, monkeypatch, task, learned, config):
    """The benchmark of `config` on one fake task with fake learned optimizers, no registry."""
    suite = [benchmark_suite.SuiteTask("fake/heldout0", task, "heldout", "fake_family")]
    monkeypatch.setattr(benchmark_suite, "build_suite", lambda spec: suite)
    monkeypatch.setattr(benchmark_suite, "resolve_learned", lambda name, *a: learned[name])
    tracker = RecordingTracker()
    results = runner.run_benchmark(BenchmarkSpec.from_config(config), tmp_path, tracker)
    paths = results_lib.write_results(results, tmp_path, tracker)
    return json.loads((tmp_path / "results.json").read_text()), paths, tracker


# SGD at this rate puts w exactly on the validation target 0.3 after 10 steps (w_t = 1 - (1 -
# 2 lr)^t): it reaches the valid-tuned Adam's best validation loss early, and never the
# train-tuned Adam's final training loss.
VALID_SPRINTER_LR = (1.0 - 0.7 ** 0.1) / 2.0


@pytest.mark.slow
def test_protocols_pick_their_own_rates_and_the_speedups_follow(tmp_path, monkeypatch):
    """Train-optimal and valid-optimal rates differ on TwoTargetTask: each protocol takes its
    own from the same trials, and a fixed optimizer's speedup is measured against each."""
    learned = {"fake": fixed_learned_spec(fixed_rate=VALID_SPRINTER_LR)}  # takes no lr
    results, paths, tracker = run_tiny(tmp_path, monkeypatch, TwoTargetTask(), learned,
                                       tiny_config())
    results_lib.check_results_schema(results)
    record = results["tasks"][0]
    adam = record["optimizers"]["adam"]
    best, trials = adam["tuning"]["best"], adam["tuning"]["trials"]
    assert adam["tuning"]["num_trials"] == len(trials) == 7  # one grid serves both protocols
    assert best["optimization"]["learning_rate"] > 2 * best["generalization"]["learning_rate"]
    for protocol in ("optimization", "generalization"):
        winner = min(trials, key=lambda t, p=protocol: t[1][p])
        assert winner[0] == best[protocol]
        assert adam["runs"][protocol]["hparams"] == best[protocol]
    opt_run, gen_run = adam["runs"]["optimization"], adam["runs"]["generalization"]
    assert opt_run["final"]["train_loss"]["mean"] < gen_run["final"]["train_loss"]["mean"]
    assert gen_run["final"]["valid_loss"]["mean"] < opt_run["final"]["valid_loss"]["mean"]

    fixed = record["optimizers"]["fixed_sgd"]
    assert (fixed["track"], fixed["num_trials"], fixed["tuning"]) == ("self_tuning", 0, None)
    vs_opt = fixed["runs"]["optimization"]["vs"]["adam"]["speedup"]
    vs_gen = fixed["runs"]["generalization"]["vs"]["adam"]["speedup"]
    # Each protocol's target is ITS tuned Adam's: final train loss / best validation loss.
    assert vs_opt["target"] == pytest.approx(opt_run["score"]["mean"])
    adam_valid = np.mean(gen_run["curves"]["valid"]["loss"], axis=0)
    assert vs_gen["target"] == pytest.approx(adam_valid.min())
    assert vs_opt["speedup"] is None  # never reaches the train-tuned Adam's training loss
    assert vs_gen["steps"] == 10 and vs_gen["speedup"] > 1.0  # beats the valid-tuned one
    assert {p.name for p in paths} >= {"results.json", "report.md", "curves_fake_heldout0.png",
                                       "profile_optimization_tuned.png",
                                       "profile_generalization_self_tuning.png"}
    text = (tmp_path / "report.md").read_text()
    assert "[optimization protocol] fixed_sgd" in text
    assert "[generalization protocol] fixed_sgd" in text
    assert len(tracker.artifacts) == len(paths) and tracker.metrics
    broken = dict(results, tasks=[dict(record, optimizers={"adam": {"kind": "baseline"}})])
    with pytest.raises(ValueError, match="optimizer adam: missing key"):
        results_lib.check_results_schema(broken)


@pytest.mark.slow
def test_tuning_free_runs_once_per_seed_and_learned_rates_get_equal_budgets(tmp_path,
                                                                            monkeypatch):
    calls, current = {}, []
    compile_run, run_entry = runner.compile_run, runner._run_entry

    def counting_compile_run(task, entry, num_seeds, spec):
        compiled, seconds, run_task = compile_run(task, entry, num_seeds, spec)

        def counted(tx_args, keys):  # runs of whichever entry is running (shared compiles)
            calls.setdefault(current[-1], []).append(int(keys.shape[0]))
            return compiled(tx_args, keys)

        return counted, seconds, run_task

    def labelled_run_entry(task, entry, *args):
        current.append(entry.label)
        return run_entry(task, entry, *args)

    monkeypatch.setattr(runner, "_run_entry", labelled_run_entry)
    monkeypatch.setattr(runner, "compile_run", counting_compile_run)
    learned = {"fake": fixed_learned_spec(label="lr_sgd", learning_rate=0.05)}
    config = tiny_config(protocol="optimization", tuning_free="prodigy",
                         schedule="warmup_cosine")
    config.tuning.grid_points = 3
    config.learned_grid_decades = 2.0
    results, _, _ = run_tiny(tmp_path, monkeypatch, FakeTask(), learned, config)
    optimizers = results["tasks"][0]["optimizers"]
    assert results["protocols"] == ["optimization"]
    for name in ("prodigy", "adam@1e-3", "lr_sgd"):
        assert calls[name] == [2], name  # one call, both final seeds, no trials
        assert optimizers[name]["track"] == "self_tuning"
        assert optimizers[name]["num_trials"] == 0 and optimizers[name]["tuning"] is None
    assert "tuning-free, 0 trials" in optimizers["prodigy"]["description"]
    # The learned optimizer with a learning rate: as many trials as tuned Adam, on a grid
    # centred on its default 0.05 (x 10^-1 ... x 10^1 with learned_grid_decades=2).
    tuned = optimizers["lr_sgd (tuned lr)"]
    assert tuned["track"] == "tuned" and tuned["num_trials"] == optimizers["adam"]["num_trials"]
    rates = sorted(h["learning_rate"] for h, _ in tuned["tuning"]["trials"])
    assert rates == pytest.approx([0.005, 0.05, 0.5])
    assert len(calls["lr_sgd (tuned lr)"]) == 3 + 1 and len(calls["adam"]) == 3 + 1
    # Adam(1e-3) runs on tuned Adam's compiled run; a tuned learned optimizer on its default's.
    assert optimizers["adam@1e-3"]["shares_compiled_run_with"] == "adam"
    assert optimizers["lr_sgd"]["shares_compiled_run_with"] == "lr_sgd (tuned lr)"
    assert optimizers["adam@1e-3"]["compile_s"] == 0.0
    profile = results["summary"]["profiles"]["optimization"]
    assert set(profile["self_tuning"]["labels"]) == {"adam@1e-3", "prodigy", "lr_sgd"}
