"""Loop helpers: norms and step sizes against NumPy, buffered fetching, identities, tables."""

import csv
import hashlib
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments import tracking
from experiments.tracking import metrics_buffer, run_metrics


def _params():
    keys = jax.random.split(jax.random.key(0), 3)
    return {"dense": {"w": jax.random.normal(keys[0], (4, 3)), "b": jnp.zeros(3)},
            "out": jax.random.normal(keys[1], (3,))}


@pytest.fixture(scope="module")
def grads():
    return jax.tree.map(lambda x: jnp.cos(x) + 0.5, _params())


def test_norms_and_sgd_step_size_equal_learning_rate(grads):
    params = _params()
    sgd = optax.sgd(0.1)
    updates, _ = sgd.update(grads, sgd.init(params), params)
    metrics = jax.jit(run_metrics.norm_metrics)(grads, updates, params)
    leaves = {"dense/b": grads["dense"]["b"], "dense/w": grads["dense"]["w"], "out": grads["out"]}
    for name, g in leaves.items():
        np.testing.assert_allclose(metrics[f"grad_norm/{name}"], np.linalg.norm(g), rtol=1e-6)
        np.testing.assert_allclose(metrics[f"update_grad_ratio/{name}"], 0.1, rtol=1e-5)
    flat_grads = np.concatenate([np.ravel(g) for g in jax.tree.leaves(grads)])
    flat_params = np.concatenate([np.ravel(p) for p in jax.tree.leaves(params)])
    np.testing.assert_allclose(metrics["grad_norm"], np.linalg.norm(flat_grads), rtol=1e-6)
    np.testing.assert_allclose(metrics["param_norm"], np.linalg.norm(flat_params), rtol=1e-6)
    np.testing.assert_allclose(metrics["update_norm"], 0.1 * np.linalg.norm(flat_grads), rtol=1e-6)
    for key in ("effective_lr", "update_grad_ratio"):
        np.testing.assert_allclose(metrics[key], 0.1, rtol=1e-5)
    np.testing.assert_allclose(metrics["update_grad_cosine"], 1.0, rtol=1e-5)
    np.testing.assert_allclose(metrics["update_param_ratio"],
                               0.1 * np.linalg.norm(flat_grads) / np.linalg.norm(flat_params),
                               rtol=1e-5)


def test_adam_step_sizes_match_numpy(grads):
    params = _params()
    tx = optax.adam(0.01)
    updates, _ = tx.update(grads, tx.init(params), params)
    metrics = run_metrics.norm_metrics(grads, updates, per_tensor=False)
    u = np.concatenate([np.ravel(x) for x in jax.tree.leaves(updates)])
    g = np.concatenate([np.ravel(x) for x in jax.tree.leaves(grads)])
    np.testing.assert_allclose(metrics["effective_lr"], -(u @ g) / (g @ g), rtol=1e-5)
    np.testing.assert_allclose(metrics["update_grad_ratio"],
                               np.linalg.norm(u) / np.linalg.norm(g), rtol=1e-5)
    assert not any("/" in key for key in metrics)


def test_zero_gradient_gives_nan_ratio_not_inf():
    zeros = jax.tree.map(jnp.zeros_like, _params())
    metrics = run_metrics.norm_metrics(zeros, zeros)
    assert float(metrics["grad_norm"]) == 0.0
    assert math.isnan(float(metrics["update_grad_ratio"]))
    assert math.isnan(float(metrics["effective_lr"]))


class _ListTracker(tracking.NullTracker):
    def __init__(self):
        self.rows, self.artifacts = [], []

    def log_metrics(self, step, metrics):
        self.rows.append((step, tracking.flatten_metrics(metrics)))

    def log_artifact(self, path):
        self.artifacts.append((path.name, path.read_text()))


@pytest.mark.parametrize("lag", [True, False])
@pytest.mark.parametrize("reduce", ["last", "mean"])
def test_metrics_buffer_fetches_once_per_log(monkeypatch, reduce, lag):
    calls = []
    real_device_get = jax.device_get
    monkeypatch.setattr(metrics_buffer.jax, "device_get",
                        lambda tree: calls.append(1) or real_device_get(tree))
    sink = _ListTracker()
    buffer = tracking.MetricsBuffer(sink, every=10, num_steps=25, reduce=reduce, lag=lag,
                                    prefix="train/", speed=tracking.SpeedMeter(8))
    step_fn = jax.jit(lambda s: {"loss": s * 2.0, "nested": {"x": s + 1.0}})
    rows_seen_after_add = []
    for step in range(25):
        buffer.add(step, step_fn(jnp.float32(step)))
        rows_seen_after_add.append(len(sink.rows))
    flushed = buffer.flush()
    assert len(calls) == 4 and [s for s, _ in sink.rows] == [0, 10, 20, 24]
    # Lagged: a log step's row is written at the next log step; the first one at once.
    expected_seen = [1, 1, 2, 3] if lag else [1, 2, 3, 4]
    assert [rows_seen_after_add[s] for s in (0, 10, 20, 24)] == expected_seen
    assert flushed == (sink.rows[-1][1] if lag else None)
    losses = [row["train/loss"] for _, row in sink.rows]
    expected = [0, 20, 40, 48] if reduce == "last" else [0, np.mean(np.arange(1, 11)) * 2,
                                                          np.mean(np.arange(11, 21)) * 2,
                                                          np.mean(np.arange(21, 25)) * 2]
    np.testing.assert_allclose(losses, expected)
    np.testing.assert_allclose([row["train/nested/x"] for _, row in sink.rows],
                               np.asarray(expected) / 2 + 1)
    assert "speed/first_step_s" in sink.rows[0][1]
    rate = sink.rows[1][1]["speed/steps_per_s"]
    assert rate > 0 and sink.rows[1][1]["speed/examples_per_s"] == pytest.approx(8 * rate)


def test_log_every_and_bad_interval():
    assert [s for s in range(12) if run_metrics.log_every(s, 5, 12)] == [0, 5, 10, 11]
    with pytest.raises(ValueError, match="positive"):
        tracking.MetricsBuffer(tracking.NullTracker(), every=0)
    with pytest.raises(ValueError, match="'last' or 'mean'"):
        tracking.MetricsBuffer(tracking.NullTracker(), every=1, reduce="median")


def test_compile_time_returns_equivalent_compiled_function():
    fn = jax.jit(lambda x: jnp.sin(x) * 2)
    x = jnp.arange(4.0)
    compiled, timing = run_metrics.compile_time(fn, x)
    np.testing.assert_allclose(compiled(x), fn(x))
    assert set(timing) == {"lower_s", "compile_s"} and all(t >= 0 for t in timing.values())


def test_resource_metrics():
    metrics = run_metrics.resource_metrics()
    assert 0 < metrics["memory/host_rss_mib"] <= metrics["memory/host_peak_rss_mib"] * 1.01
    has_stats = any(d.memory_stats() for d in jax.local_devices())
    assert has_stats == any(k.startswith("memory/device_") for k in metrics)


def test_predictions_table_csv_and_markdown():
    sink = _ListTracker()
    inputs = [np.arange(10.0), np.ones((2, 2)), "a|b"]
    table = tracking.log_predictions_table(sink, 5, inputs, [1, 2, 3], np.array([1, 0, 3]))
    names = [name for name, _ in sink.artifacts]
    assert names == ["predictions_step5.csv", "predictions_step5.md"]
    rows = list(csv.DictReader(sink.artifacts[0][1].splitlines()))
    assert [r["correct"] for r in rows] == ["True", "False", "True"]
    assert rows[0]["input"].endswith("(10,)") and rows[2]["input"] == "a|b"
    assert "a\\|b" in table and table == sink.artifacts[1][1]
    assert sink.rows == [(5, {"predictions/shown_accuracy": pytest.approx(2 / 3)})]
    with pytest.raises(ValueError, match="same length"):
        tracking.log_predictions_table(sink, 5, inputs, [1, 2], [1, 2, 3])


class _FakeLOpt:
    name = "mlp"

    def config(self):
        return {"hidden": (32, 32), "step_multiplier": 1e-3}


class _FakeTask:
    name = "digits_mlp"

    def dataset_info(self):
        return {"name": "digits", "sizes": {"train": 1000}, "fingerprint": "abc"}


def test_optimizer_and_dataset_identity(tmp_path):
    checkpoint = tmp_path / "theta.msgpack"
    checkpoint.write_bytes(b"weights")
    identity = tracking.optimizer_identity(_FakeLOpt(), pretrained="mlp_v1", checkpoint=checkpoint)
    assert identity["name"] == "mlp" and identity["config"]["hidden"] == [32, 32]
    assert identity["checkpoint_sha256"] == hashlib.sha256(b"weights").hexdigest()
    assert tracking.optimizer_identity("adam", {"learning_rate": 1e-3})["config"] == {
        "learning_rate": 1e-3}
    assert tracking.dataset_identity(_FakeTask()) == {
        "name": "digits", "sizes": {"train": 1000}, "fingerprint": "abc", "task": "digits_mlp"}
    with pytest.raises(FileNotFoundError, match="missing"):
        tracking.file_sha256(tmp_path / "missing")


def test_fetch_to_host_matches_device_get_exactly():
    tree = {"f32": jnp.float32(1.5), "bf16": jnp.bfloat16(0.3), "i32": jnp.int32(2**30 + 1),
            "u32": jnp.uint32(2**32 - 1), "flag": jnp.bool_(True), "nan": jnp.float32(jnp.nan),
            "vector": jnp.arange(3.0), "python": 2.5, "more": [jnp.float32(-4.0)]}
    fetched = tracking.fetch_to_host(tree)
    expected = jax.device_get(tree)
    assert jax.tree.structure(fetched) == jax.tree.structure(expected)
    for got, want in zip(jax.tree.leaves(fetched), jax.tree.leaves(expected), strict=True):
        assert np.asarray(got).dtype == np.asarray(want).dtype
        np.testing.assert_array_equal(got, want)


@pytest.mark.slow  # compiles a real task with a learned optimizer (~5-10 s)
def test_tracked_training_of_a_zoo_task_with_a_learned_optimizer(tmp_path):
    """End to end with real components: digits MLP trained by MLPLOpt, logged and read back."""
    import learned_opt as lo
    import models

    task = models.get_task("digits_mlp")
    lopt = lo.MLPLOpt()
    tx = lopt.optimizer(lopt.init(jax.random.key(0)), num_steps=30)

    @jax.jit
    def train_step(params, opt_state, key):
        batch = task.sample_batch(key, "train")
        loss, grads = jax.value_and_grad(task.loss)(params, batch)
        updates, opt_state = tx.update(grads, opt_state, params, value=loss)
        metrics = {"loss": loss, **tracking.norm_metrics(grads, updates, params)}
        return optax.apply_updates(params, updates), opt_state, metrics

    tracker = tracking.start_run(tmp_path, config={"task": task.name}, collect_env=False)
    tracker.log_params({"dataset": tracking.dataset_identity(task),
                        "optimizer": tracking.optimizer_identity(lopt)})
    params = task.init(jax.random.key(1))
    opt_state = tx.init(params)
    buffer = tracking.MetricsBuffer(tracker, every=10, num_steps=30, prefix="train/",
                                    speed=tracking.SpeedMeter(examples_per_step=64))
    for step, key in enumerate(jax.random.split(jax.random.key(2), 30)):
        params, opt_state, metrics = train_step(params, opt_state, key)
        buffer.add(step, metrics)
    buffer.flush()
    tracker.finish()
    rows = tracking.read_metrics(tmp_path)
    assert [r["step"] for r in rows] == [0, 10, 20, 29]
    assert all(np.isfinite(r["train/loss"]) and r["train/update_grad_ratio"] > 0 for r in rows)
    assert "train/grad_norm/hidden_layers/0/kernel" in rows[0]
    assert rows[-1]["speed/examples_per_s"] > 0
    params_json = (tmp_path / "params.json").read_text()
    assert task.dataset_info()["fingerprint"] in params_json and '"mlp"' in params_json
