"""experiments.meta_train end to end: workdir contents, kill -9 + resume gives exactly the theta
of an uninterrupted run, bad config input fails before compiling."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import ml_collections
import numpy as np
import pytest

import learned_opt as lo
from experiments import meta_train
from experiments.configs import meta_tiny
from learned_opt.pretrained import load_pretrained_theta

REPO = Path(__file__).resolve().parents[2]
STEPS = 40


def _command(workdir, *overrides):
    return [sys.executable, "-m", "experiments.meta_train", "--config",
            str(REPO / "experiments/configs/meta_tiny.py"), "--workdir", str(workdir),
            "--config.checkpoint_every=2", *overrides]


def _env():
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    return env


def _run(workdir, *overrides):
    return subprocess.run(_command(workdir, *overrides), cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=400)


@pytest.mark.slow
def test_kill_and_resume_matches_uninterrupted_run(tmp_path):
    full = tmp_path / "full"
    done = _run(full, f"--config.outer_steps={STEPS}")
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in (full / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == STEPS and all("meta_loss" in r for r in rows)
    assert (full / "config.json").exists() and (full / "env.json").exists()
    _, theta_full, card = load_pretrained_theta(full / "learned_adam_quadratic.json")
    assert card["outer_steps"] == STEPS and card["estimator"] == "tbptt"
    assert card["startup_s_last_session"] > 0 and (full / "compile_cache").is_dir()

    killed = tmp_path / "killed"
    proc = subprocess.Popen(_command(killed, "--config.outer_steps=100000"), cwd=REPO,
                            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 400
        while not any(p.name.isdigit() for p in (killed / "checkpoints").glob("*")):
            assert proc.poll() is None and time.time() < deadline, "no checkpoint appeared"
            time.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    resumed = _run(killed, f"--config.outer_steps={STEPS}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from step" in resumed.stdout
    resumed_step = int(resumed.stdout.split("resuming from step")[1].split()[0])
    assert 0 < resumed_step < STEPS, "killed too late to test resumption"
    _, theta_resumed, _ = load_pretrained_theta(killed / "learned_adam_quadratic.json")
    for key in theta_full:
        np.testing.assert_array_equal(np.asarray(theta_resumed[key]), np.asarray(theta_full[key]))

    # The same workdir under an incompatible config refuses to resume and says why.
    refused = _run(killed, "--config.estimator=pes")
    assert refused.returncode != 0 and "estimator: checkpoint has 'tbptt'" in refused.stderr


def test_cpu_devices_shards_the_population_over_that_many_devices(tmp_path):
    done = _run(tmp_path, "--config.outer_steps=2", "--config.cpu_devices=2")
    assert done.returncode == 0, done.stderr[-3000:]
    card = json.loads((tmp_path / "learned_adam_quadratic.json").read_text())
    assert len(card["devices"]) == 2 and card["outer_steps"] == 2
    fingerprint = json.loads((tmp_path / "checkpoints" / "fingerprint.json").read_text())
    assert fingerprint["num_devices"] == 2


def test_config_key_typo_fails_at_flag_parsing(tmp_path):
    typo = _run(tmp_path / "typo", "--config.unrol_length=3")
    assert typo.returncode != 0 and "unrol_length" in typo.stderr
    assert not (tmp_path / "typo" / "checkpoints").exists()


def _config(**overrides):
    config = meta_tiny.get_config()
    config.update(overrides)
    return config


@pytest.mark.parametrize("key,value,valid", [
    ("estimator", "sgd", "pes"), ("lopt", "nope", "mlp"), ("family", "nope", "digits_mlp")])
def test_unknown_names_list_the_valid_ones(key, value, valid):
    with pytest.raises(ValueError, match=f"unknown {key} '{value}'.*{valid}"):
        meta_train.validate(_config(**{key: value}))


def test_unknown_or_missing_config_keys_fail():
    config = ml_collections.ConfigDict(_config().to_dict())
    config.unrol_length = 3
    with pytest.raises(ValueError, match=r"unknown keys \['unrol_length'\]"):
        meta_train.validate(config)


@pytest.mark.parametrize("overrides,message", [
    (dict(num_groups=0), "num_groups must be positive or -1"),
    (dict(num_groups=2, group_index=0), "group_index=0 picks one group of one family"),
    (dict(family="quadratic,quadratic"), "lists a family twice"),
    (dict(family="quadratic,nope"), "unknown family 'nope'"),
    (dict(name="my run"), "pretrained name 'my run'"),
    (dict(cpu_devices=-1), "cpu_devices must be >= 0"),
    (dict(inner_schedule="cosine"), "unknown inner_schedule 'cosine'.*warmup_cosine"),
    (dict(cpu_devices=3), "cpu_devices=3 but this process has 8 CPU devices"),
])
def test_bad_group_mixtures_fail_before_compiling(overrides, message):
    with pytest.raises(ValueError, match=message):
        meta_train.validate(_config(**overrides))


def test_mixed_groups_run_resume_and_write_their_groups(tmp_path):
    config = _config(num_groups=2, outer_steps=2, checkpoint_every=2, log_every=1)
    pairs = meta_train.pick_groups(config)
    assert len(pairs) == 2 and pairs[0][1] != pairs[1][1]
    assert meta_train.pick_groups(config) == pairs  # drawn from the seed: reproducible
    assert meta_train.pretrained_name(_config(family="quadratic,digits_mlp")) == (
        "learned_adam_quadratic-digits_mlp")
    assert len(meta_train.pick_groups(_config(num_groups=-1))) == len(
        pairs[0][0].groups("meta_train"))
    _, theta_run, _ = load_pretrained_theta(meta_train.run(config, tmp_path))
    # Run again: restores the tuple-of-groups state from its checkpoint (nothing left to do).
    _, theta, card = load_pretrained_theta(meta_train.run(config, tmp_path))
    assert card["outer_steps"] == 2 and card["resumed_from_step"] == 2
    for key in theta:
        np.testing.assert_array_equal(np.asarray(theta[key]), np.asarray(theta_run[key]))
    assert card["total_tasks"] == 16 and card["groups"] == [
        f"quadratic:{group!r}" for _, group in pairs]
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert all(np.isfinite(r["meta_loss_group1"]) for r in rows)
    fingerprint = json.loads((tmp_path / "checkpoints" / "fingerprint.json").read_text())
    assert fingerprint["num_groups"] == 2 and "num_groups" not in meta_train.fingerprint(
        _config())  # single-group runs keep the fingerprint of older checkpoints


def test_init_from_warm_starts_from_a_pretrained_card(tmp_path):
    config = _config(outer_steps=1, checkpoint_every=1, log_every=1)
    source = meta_train.run(config, tmp_path / "source")
    lopt, theta_source, _ = load_pretrained_theta(source)
    assert meta_train.fingerprint(config) == meta_train.fingerprint(
        _config(outer_steps=1, checkpoint_every=1, log_every=1, init_from=""))
    assert "init_from" not in meta_train.fingerprint(config)  # older checkpoints still resume

    warm = _config(outer_steps=1, checkpoint_every=1, log_every=1, init_from=str(source),
                   seed=7)
    theta, provenance = meta_train.initial_theta(warm, lopt)
    for key in theta_source:  # the source's weights, not lopt.init(seed=7)
        np.testing.assert_array_equal(np.asarray(theta[key]), np.asarray(theta_source[key]))
    _, theta_warm, card = load_pretrained_theta(meta_train.run(warm, tmp_path / "warm"))
    assert card["init_from"]["name"] == "learned_adam_quadratic"
    assert card["init_from"]["outer_steps"] == 1 and card["total_outer_steps"] == 2
    assert any(not np.array_equal(theta_warm[k], theta_source[k]) for k in theta_source)

    with pytest.raises(ValueError, match="init_from=.* is a LearnedAdam.*meta-trains MLPLOpt"):
        meta_train.initial_theta(_config(lopt="mlp", init_from=str(source)),
                                 lo.get_lopt("mlp"))
    with pytest.raises(ValueError, match="no pretrained optimizer .no_such_optimizer"):
        meta_train.initial_theta(_config(init_from="no_such_optimizer"), lopt)
