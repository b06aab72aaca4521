"""Experiment tracking: one small `Tracker` protocol, composable backends, a no-op default.

    from experiments import tracking
    tracker = tracking.start_run(workdir, config=config, backends=("local", "tensorboard"))
    tracker.log_metrics(step, {"train/loss": loss})
    tracker.finish()

Modules: `core` (the protocol, NullTracker, LocalTracker, CompositeTracker, start_run),
`backends` (TensorBoard, MLflow), `mlflow_process` (MLflow in a child process), `envinfo`
(git / packages / devices), `values` (JSON-safe values, metrics.jsonl reading), `records`
(dataset / optimizer identities, prediction tables), `run_metrics` and `metrics_buffer`
(loop helpers: log cadence, speed, norms, deferred host fetches), `outputs` (a run's results
files).
"""

from experiments.tracking.core import (
    BACKENDS,
    CompositeTracker,
    LocalTracker,
    NullTracker,
    Tracker,
    check_writable_workdir,
    start_run,
)
from experiments.tracking.metrics_buffer import MetricsBuffer, fetch_to_host
from experiments.tracking.records import (
    dataset_identity,
    file_sha256,
    log_predictions_table,
    optimizer_identity,
)
from experiments.tracking.run_metrics import (
    SpeedMeter,
    compile_time,
    log_every,
    norm_metrics,
    resource_metrics,
)
from experiments.tracking.values import (
    check_step,
    flatten_metrics,
    flatten_params,
    read_metrics,
    to_jsonable,
    to_scalar,
    write_json_atomic,
)

__all__ = [
    "BACKENDS", "CompositeTracker", "LocalTracker", "MetricsBuffer", "NullTracker", "SpeedMeter",
    "Tracker", "check_step", "check_writable_workdir", "compile_time", "dataset_identity",
    "fetch_to_host", "file_sha256", "flatten_metrics", "flatten_params", "log_every",
    "log_predictions_table", "norm_metrics", "optimizer_identity", "read_metrics",
    "resource_metrics", "start_run", "to_jsonable", "to_scalar", "write_json_atomic",
]
