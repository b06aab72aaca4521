"""Bad input fails in BenchmarkSpec / the plan, naming the valid choices, before any compilation;
names of tasks and learned optimizers; a checkpoint knows its meta-training family."""

import jax
import pytest
from bench_fakes import FakeTask, fixed_learned_spec

from experiments.benchmarking import runner
from experiments.benchmarking import suite as benchmark_suite
from experiments.benchmarking.plan import build_plan
from experiments.benchmarking.spec import BenchmarkSpec, SuiteSpec
from experiments.configs import benchmark_quick


def quick(**overrides):
    config = benchmark_quick.get_config()
    for key, value in overrides.items():
        target = config
        *path, leaf = key.split(".")
        for part in path:
            target = target[part]
        target[leaf] = value
    return config


def test_quick_config_parses_into_one_frozen_spec():
    spec = BenchmarkSpec.from_config(quick())
    assert spec.protocols == ("optimization", "generalization")
    assert spec.tuning.protocols == spec.protocols and spec.tuning.num_steps == spec.num_steps
    assert spec.tuning.eval_splits == ("valid",)
    assert "muon" in spec.baselines and "prodigy" in spec.tuning_free
    with pytest.raises(AttributeError):
        spec.num_steps = 3  # frozen
    only = BenchmarkSpec.from_config(quick(protocol="optimization"))
    assert only.protocols == ("optimization",) and only.tuning.eval_splits == ()
    assert spec.tuning.digest() != only.tuning.digest()  # never reuses the other's studies


@pytest.mark.parametrize("key, value, message", [
    ("protocol", "speed", r"unknown protocol 'speed'; valid choices: \['optimization', "
                          r"'generalization', 'both'\]"),
    ("baselines", "adam,rmsprop", r"unknown tuned baseline\(s\) \['rmsprop'\]; valid choices: "
                                  r"\['adam', 'adamw', 'muon', 'nesterov', 'sgd'\]"),
    ("baselines", "sgd", "must include 'adam'"),
    ("tuning_free", "prodigy,adagrad", r"unknown tuning-free baseline\(s\) \['adagrad'\]; "
                                       r"valid choices: .*'dadapt_adamw', 'dog', 'dowg'"),
    ("schedule", "linear", r"unknown schedule 'linear'; valid choices: \['warmup_cosine', "
                           r"'constant'\]"),
    ("learned_tuning", "always", r"valid choices: \['auto', 'relative', 'none'\]"),
    ("learned_schedule", "cosine", r"valid choices: \['same', 'constant'\]"),
    ("tuning.grid_points", 0, "grid_points=0 .*at least 1 trial"),
    ("tuning.sampler", "cmaes", "valid samplers"),
    ("seeds", (0, 1, 2), "overlap: final runs must use fresh seeds"),
    ("num_steps", 410, "multiple of eval_every"),
])
def test_bad_input_names_the_valid_choices(key, value, message):
    with pytest.raises(ValueError, match=message):
        BenchmarkSpec.from_config(quick(**{key: value}))


def test_a_zero_trial_random_budget_is_refused():
    with pytest.raises(ValueError, match="num_trials=0"):
        BenchmarkSpec.from_config(quick(**{"tuning.sampler": "random", "tuning.num_trials": 0}))


def test_relative_grid_for_an_optimizer_without_learning_rate_fails_before_compiling(
        tmp_path, monkeypatch):
    untunable = fixed_learned_spec(label="no_lr")
    spec = BenchmarkSpec.from_config(quick(learned_tuning="relative", learned="x"))
    with pytest.raises(ValueError, match=r"\['no_lr'\] take\(s\) no learning_rate.*'auto'"):
        build_plan(spec, [untunable])
    # Through the benchmark: the error comes before any task is built or anything compiles.
    monkeypatch.setattr(benchmark_suite, "resolve_learned", lambda *a: untunable)
    monkeypatch.setattr(benchmark_suite, "build_suite", lambda s: pytest.fail("suite built"))
    monkeypatch.setattr(runner, "compile_run", lambda *a: pytest.fail("compiled"))
    with pytest.raises(ValueError, match="no learning_rate"):
        runner.run_benchmark(spec, tmp_path, None)
    # "auto" runs it at its default only; a tunable one also gets a tuned entry.
    auto = BenchmarkSpec.from_config(quick(learned="x"))
    tracks = {e.label: e.track for e in build_plan(auto, [untunable, fixed_learned_spec(
        label="lr", learning_rate=0.1)])}
    assert tracks["no_lr"] == "self_tuning" and "no_lr (tuned lr)" not in tracks
    assert tracks["lr (tuned lr)"] == "tuned" and tracks["lr"] == "self_tuning"
    assert tracks["adam@1e-3"] == "self_tuning" and tracks["prodigy"] == "self_tuning"


@pytest.mark.parametrize("learned_schedule", ["same", "constant"])
def test_a_tuned_learned_optimizer_follows_the_baselines_schedule(learned_schedule):
    """Its tuned rate is the peak of tuned Adam's warmup-cosine schedule ("same"), or constant;
    at its default (self-tuning track) it is constant, and both share one compiled run."""
    import jax.numpy as jnp

    spec = BenchmarkSpec.from_config(quick(learned="x", learned_schedule=learned_schedule,
                                           num_steps=100, warmup_fraction=0.1))
    entries = {e.label: e for e in build_plan(spec, [fixed_learned_spec(label="lr",
                                                                        learning_rate=0.1)])}
    tuned, default = entries["lr (tuned lr)"], entries["lr"]
    assert tuned.compile_key == default.compile_key
    assert learned_schedule in tuned.description or "warmup_cosine" in tuned.description
    params, grads = jnp.zeros(()), jnp.ones(())

    def steps(entry, args, n):
        tx = entry.make_tx(args)
        state, out = tx.init(params), []
        for _ in range(n):
            update, state = tx.update(grads, state, params)
            out.append(float(update))
        return out

    # The same function of tx_args: the tuned entry at its winner's hyperparameters.
    tuned_steps = steps(tuned, tuned.with_hparams({"learning_rate": 0.2}), 101)
    default_steps = steps(default, default.tx_args, 3)
    assert default_steps == pytest.approx([-0.1] * 3)
    if learned_schedule == "constant":
        assert tuned_steps == pytest.approx([-0.2] * 101)
    else:  # warmup 0 -> 0.2 over 10 steps, cosine down to 0 at step 100
        assert tuned_steps[0] == 0.0 and tuned_steps[5] == pytest.approx(-0.1)
        assert tuned_steps[10] == pytest.approx(-0.2) and tuned_steps[100] == pytest.approx(0.0)
        assert tuned_steps[55] == pytest.approx(-0.1, rel=1e-3)


def test_an_untrained_default_is_tuned_around_the_step_size_it_runs_at():
    import learned_opt as lo

    spec = benchmark_suite.resolve_learned("default:norm_mlp", num_steps=10)
    lopt = lo.get_lopt("norm_mlp")
    nominal = float(lopt.nominal_step_size(lopt.init(jax.random.key(0))))
    assert spec.tunable and spec.default_learning_rate == pytest.approx(nominal)
    assert float(spec.tx_args["learning_rate"]) == pytest.approx(nominal)


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError, match="valid tasks: .*digits_mlp"):
        benchmark_suite.build_suite(SuiteSpec(tasks=("digits_mpl",)))
    with pytest.raises(ValueError, match="valid families: .*digits_mlp"):
        benchmark_suite.build_suite(SuiteSpec(heldout_families=("nope",)))
    with pytest.raises(ValueError, match="suite is empty"):
        benchmark_suite.build_suite(SuiteSpec())
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
    spec = benchmark_suite.resolve_learned(f"checkpoint:{card}", num_steps=40)
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
        benchmark_suite.resolve_learned(f"checkpoint:{card}", num_steps=40)
    with pytest.raises(ValueError, match="is not a file"):
        benchmark_suite.resolve_learned(f"checkpoint:{tmp_path / 'missing.json'}", num_steps=5)


def test_reuse_tuning_copies_the_study_database_and_never_writes_the_source(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    (source / "optuna.db").write_bytes(b"db")
    assert runner.reuse_tuning(str(source), tmp_path / "new") == str(
        (source / "optuna.db").resolve())
    assert (tmp_path / "new" / "optuna.db").read_bytes() == b"db"
    (tmp_path / "new" / "optuna.db").write_bytes(b"resumed")  # a resumed run keeps its own
    runner.reuse_tuning(str(source), tmp_path / "new")
    assert (tmp_path / "new" / "optuna.db").read_bytes() == b"resumed"
    assert runner.reuse_tuning("", tmp_path / "x") is None
    with pytest.raises(ValueError, match="no Optuna database"):
        runner.reuse_tuning(str(tmp_path / "missing"), tmp_path / "other")



def test_self_tuning_runs_a_learned_optimizer_on_its_own_default_schedule():
    """NormMLPLOpt's default (a float rate is the peak of a warmup-cosine over the horizon) is
    what the self-tuning track runs: the same updates as `lopt.optimizer(theta, num_steps=N)`."""
    import jax.numpy as jnp
    import numpy as np

    import learned_opt as lo

    num_steps = 40
    spec = BenchmarkSpec.from_config(quick(learned="x", num_steps=num_steps, eval_every=20))
    learned = benchmark_suite.resolve_learned("default:norm_mlp", num_steps=num_steps)
    assert learned.default_schedule == "warmup_cosine"
    entry = next(e for e in build_plan(spec, [learned]) if e.label == learned.label)
    assert entry.track == "self_tuning" and "warmup_cosine" in entry.description
    lopt = lo.get_lopt("norm_mlp")
    theta = lopt.init(jax.random.key(0))
    params = {"w": jnp.ones((3, 4)), "b": jnp.ones((4,))}
    grads = jax.tree.map(lambda p: jnp.linspace(-1.0, 2.0, p.size).reshape(p.shape), params)

    def rms_of_updates(tx):
        state, out = tx.init(params), []
        for _ in range(4):
            update, state = tx.update(grads, state, params)
            out.append(float(jnp.sqrt(jnp.mean(jnp.square(update["w"])))))
        return out

    got = rms_of_updates(entry.make_tx(entry.tx_args))
    assert got == pytest.approx(rms_of_updates(lopt.optimizer(theta, num_steps=num_steps)))
    # warmup over round(0.05 * 40) = 2 updates from 0 to the default rate
    np.testing.assert_allclose(got[:3], [0.0, 0.5 * lopt.step_mult, lopt.step_mult], rtol=1e-4,
                               atol=1e-12)
