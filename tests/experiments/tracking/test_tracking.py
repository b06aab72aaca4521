"""Tracking: each backend writes, and that backend's own reader gets back what was written."""

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from experiments import tracking
from experiments.tracking import envinfo

REPO_ROOT = Path(__file__).resolve().parents[3]


def _config():
    config = ml_collections.ConfigDict()
    config.seed = 3
    config.optimizer = ml_collections.ConfigDict({"name": "adam", "learning_rate": 1e-3})
    config.hidden = (32, 16)
    return config


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """One run through start_run with the local backend, shared by the read-back tests."""
    workdir = tmp_path_factory.mktemp("local_run")
    tracker = tracking.start_run(workdir, config=_config())
    tracker.log_params({"optimizer": {"name": "adam", "b1": np.float32(0.9)}, "steps": 10})
    tracker.log_metrics(0, {"train/loss": jnp.float32(2.5), "train/accuracy": np.float64(0.1)})
    tracker.log_metrics(10, {"train": {"loss": 1.25}, "flag": True, "count": jnp.int32(7)})
    tracker.log_metrics(np.int64(20), {"train/loss": float("nan"), "grad_norm": float("inf")})
    artifact = workdir.parent / "note.txt"
    artifact.write_text("hello")
    tracker.log_artifact(artifact)
    tracker.finish()
    return workdir


def test_local_files_read_back(local_run):
    config = json.loads((local_run / "config.json").read_text())
    assert config == {"seed": 3, "optimizer": {"name": "adam", "learning_rate": 1e-3},
                      "hidden": [32, 16]}
    params = json.loads((local_run / "params.json").read_text())
    assert params["optimizer"]["b1"] == pytest.approx(0.9)
    assert params["steps"] == 10
    rows = tracking.read_metrics(local_run)
    assert [r["step"] for r in rows] == [0, 10, 20]
    assert rows[0]["train/loss"] == 2.5 and rows[0]["train/accuracy"] == 0.1
    assert rows[1] == {**rows[1], "train/loss": 1.25, "flag": 1, "count": 7}
    # NaN and inf are recorded, not dropped, and the plain json reader parses them back.
    assert math.isnan(rows[2]["train/loss"]) and rows[2]["grad_norm"] == math.inf
    assert "NaN" in (local_run / "metrics.jsonl").read_text().splitlines()[2]
    assert (local_run / "artifacts" / "note.txt").read_text() == "hello"
    assert json.loads((local_run / "run.json").read_text())["status"] == "finished"


def test_env_json_records_code_packages_devices(local_run):
    env = json.loads((local_run / "env.json").read_text())
    assert env["packages"]["jax"] == jax.__version__
    assert env["packages"]["numpy"] == np.__version__
    assert env["jax"]["device_count"] == jax.device_count()
    assert env["jax"]["backend"] == jax.default_backend()
    assert env["python"] == sys.version.split()[0]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                          text=True, check=True).stdout.strip()
    assert env["git"]["commit"] == head
    assert isinstance(env["git"]["dirty"], bool) and len(env["git"]["diff_sha256"]) == 64
    if env["git"]["diff_bytes"]:
        assert (local_run / "git_diff.patch").exists()


def test_env_vars_keep_jax_flags_and_drop_secrets():
    kept = envinfo.jax_env_vars({
        "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "HOME": "/root",
        "MLFLOW_TRACKING_URI": "http://user:pw@host:5000", "JAX_SECRET_TOKEN": "x",
    })
    assert kept == {"XLA_FLAGS": "--xla_force_host_platform_device_count=8",
                    "MLFLOW_TRACKING_URI": "http://***@host:5000"}


@pytest.mark.parametrize(
    "metrics, error, words",
    [
        ({"weights": jnp.ones((3, 2))}, ValueError, ["'weights'", "(3, 2)"]),
        ({"name": "adam"}, TypeError, ["'name'", "str"]),
        ({"": 1.0}, TypeError, ["non-empty"]),
        ([("loss", 1.0)], TypeError, ["mapping"]),
    ],
)
def test_bad_metrics_are_clear_errors(tmp_path, metrics, error, words):
    tracker = tracking.start_run(tmp_path, collect_env=False)
    with pytest.raises(error) as info:
        tracker.log_metrics(0, metrics)
    assert all(word in str(info.value) for word in words)
    tracker.finish()
    assert tracking.read_metrics(tmp_path) == []


@pytest.mark.parametrize("step, error", [(-1, ValueError), (1.5, TypeError), ("3", TypeError)])
def test_bad_step(tmp_path, step, error):
    tracker = tracking.start_run(tmp_path, collect_env=False)
    with pytest.raises(error, match="step"):
        tracker.log_metrics(step, {"loss": 1.0})


def test_unknown_backend(tmp_path):
    with pytest.raises(ValueError, match="tensorboard"):
        tracking.start_run(tmp_path, backends=("local", "wandb"), collect_env=False)


def test_unwritable_workdir(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(NotADirectoryError, match="a_file"):
        tracking.start_run(blocker, collect_env=False)
    with pytest.raises(PermissionError, match="not writable"):
        tracking.start_run(blocker / "run", collect_env=False)
    if os.geteuid() != 0:  # root ignores directory permissions
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(PermissionError, match="locked"):
            tracking.start_run(locked, collect_env=False)


class _BrokenBackend:
    def __init__(self):
        self.calls = 0

    def log_params(self, params):
        pass

    def log_metrics(self, step, metrics):
        self.calls += 1
        raise ConnectionError("server went away")

    def log_artifact(self, path):
        pass

    def finish(self, status="finished"):
        pass


def test_failing_optional_backend_warns_and_local_record_survives(tmp_path):
    broken = _BrokenBackend()
    tracker = tracking.CompositeTracker([tracking.LocalTracker(tmp_path), broken])
    with pytest.warns(RuntimeWarning, match="server went away"):
        tracker.log_metrics(0, {"loss": 1.0})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tracker.log_metrics(1, {"loss": 0.5})  # the broken backend is off: no second warning
    tracker.finish()
    assert broken.calls == 1
    assert [r["loss"] for r in tracking.read_metrics(tmp_path)] == [1.0, 0.5]


def test_exception_inside_run_marks_it_failed(tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        with tracking.start_run(tmp_path, collect_env=False) as tracker:
            tracker.log_metrics(0, {"loss": 1.0})
            raise RuntimeError("boom")
    assert json.loads((tmp_path / "run.json").read_text())["status"] == "failed"
    assert tracking.read_metrics(tmp_path)[0]["loss"] == 1.0


def test_null_tracker_is_a_tracker():
    null = tracking.NullTracker()
    assert isinstance(null, tracking.Tracker)
    null.log_metrics(0, {"anything": object()})
    null.finish()


_KILLED_WRITER = """
import sys, time
from experiments import tracking
tracker = tracking.start_run(sys.argv[1], backends=("local", "tensorboard"), collect_env=False)
step = 0
while True:
    tracker.log_metrics(step, {"loss": 1.0 / (step + 1), "nan": float("nan")})
    step += 1
    time.sleep(0.001)
"""


def test_killed_run_leaves_valid_jsonl_and_events(tmp_path):
    process = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(tmp_path)],
                               cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    metrics = tmp_path / "metrics.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline:
        if metrics.exists() and metrics.read_text().count("\n") >= 50:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    rows = tracking.read_metrics(tmp_path)
    assert len(rows) >= 50
    assert [r["step"] for r in rows] == list(range(len(rows)))
    assert all(r["loss"] == 1.0 / (r["step"] + 1) and math.isnan(r["nan"]) for r in rows)
    assert json.loads((tmp_path / "run.json").read_text())["status"] == "running"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(tmp_path / "tensorboard"))
    accumulator.Reload()
    tb_steps = [e.step for e in accumulator.Scalars("loss")]
    # Whole records up to the kill: the event file may be at most one row behind the JSONL.
    assert tb_steps == list(range(len(tb_steps))) and len(tb_steps) >= len(rows) - 1


# ----------------------------------------------------------------------------------------------
# TensorBoard and MLflow, each read back with its own reader.


@pytest.fixture(scope="module")
def all_backends_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("all_backends")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # every backend must start cleanly
        tracker = tracking.start_run(workdir, config=_config(),
                                     backends=("local", "tensorboard", "mlflow"),
                                     run_name="adam_seed3", collect_env=False)
    assert len(tracker.trackers) == 3
    for step in range(0, 30, 10):
        tracker.log_metrics(step, {"train/loss": 1.0 / (step + 1), "grad_norm": jnp.float32(2.0)})
    tracker.log_metrics(30, {"train/loss": float("nan")})
    artifact = workdir.parent / "table.csv"
    artifact.write_text("a,b\n1,2\n")
    tracker.log_artifact(artifact)
    artifact.unlink()  # a temporary file: the MLflow process must use the workdir's copy
    tracker.finish()
    return workdir


@pytest.mark.slow  # shares a fixture that starts MLflow's SQLite store (~5-20 s)
def test_tensorboard_event_files_read_back(all_backends_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(all_backends_run / "tensorboard"))
    accumulator.Reload()
    events = accumulator.Scalars("train/loss")
    assert [e.step for e in events] == [0, 10, 20, 30]
    np.testing.assert_allclose([e.value for e in events[:3]], [1.0, 1 / 11, 1 / 21], rtol=1e-6)
    assert math.isnan(events[3].value)
    assert [e.value for e in accumulator.Scalars("grad_norm")] == [2.0, 2.0, 2.0]
    (params_event,) = accumulator.Tensors("params/text_summary")
    assert b"| config.optimizer.learning_rate | 0.001 |" in params_event.tensor_proto.string_val[0]


@pytest.mark.slow  # shares a fixture that starts MLflow's SQLite store (~5-20 s)
def test_mlflow_sqlite_store_read_back(all_backends_run):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{all_backends_run / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("learned-opt")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "adam_seed3" and run.info.status == "FINISHED"
    assert run.data.params["config.optimizer.learning_rate"] == "0.001"
    assert run.data.params["config.hidden"] == "[32, 16]"
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert [m.step for m in history] == [0, 10, 20, 30]
    np.testing.assert_allclose([m.value for m in history[:3]], [1.0, 1 / 11, 1 / 21])
    assert math.isnan(history[3].value)
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id)]
    assert artifacts == ["table.csv"]
    assert str(all_backends_run) in experiment.artifact_location
    local_copy = client.download_artifacts(run.info.run_id, "table.csv", str(all_backends_run))
    assert Path(local_copy).read_text() == "a,b\n1,2\n"


def test_unreachable_mlflow_server_warns_fast_and_keeps_local_record(tmp_path, monkeypatch):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    start = time.perf_counter()
    with pytest.warns(RuntimeWarning, match="unreachable"):
        tracker = tracking.start_run(tmp_path, config={"seed": 0},
                                     backends=("local", "mlflow"), collect_env=False)
    assert time.perf_counter() - start < 30  # fails fast; generous bound, not a benchmark
    tracker.log_metrics(0, {"loss": 1.0})
    tracker.finish()
    assert tracking.read_metrics(tmp_path)[0]["loss"] == 1.0
    assert json.loads((tmp_path / "config.json").read_text()) == {"seed": 0}


@pytest.mark.slow  # the MLflow child process imports mlflow (~5 s)
def test_mlflow_process_failure_surfaces_as_warning_and_local_record_survives(tmp_path):
    from experiments.tracking.mlflow_process import MLflowProcessTracker

    bad_store = "no-such-scheme://store"  # MLflow has no store for this scheme
    child = MLflowProcessTracker(tmp_path, tracking_uri=bad_store)
    tracker = tracking.CompositeTracker([tracking.LocalTracker(tmp_path), child])
    deadline = time.time() + 120
    with pytest.warns(RuntimeWarning, match="could not start the MLflow run"):
        while len(tracker.trackers) == 2 and time.time() < deadline:
            tracker.log_metrics(0, {"loss": 1.0})
            time.sleep(0.2)
    assert tracker.trackers == tracker.trackers[:1]
    tracker.finish()
    assert tracking.read_metrics(tmp_path)[0]["loss"] == 1.0
