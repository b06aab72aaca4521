"""Optional tracking backends: TensorBoard (tensorboardX) and MLflow. Both import lazily.

Usually reached through `tracking.start_run(workdir, backends=("local", "tensorboard",
"mlflow"))`; each class also works alone:

    tb = TensorBoardTracker(workdir)          # event files in workdir/tensorboard
    ml = MLflowTracker(workdir, run_name="adam_seed0")
    ml.log_metrics(10, {"train/loss": 0.5}); ml.finish()

MLflow's store is `sqlite:///<workdir>/mlflow.db` (artifacts in `workdir/mlartifacts`) unless
`MLFLOW_TRACKING_URI` (or `tracking_uri=`) points elsewhere, e.g. a shared server. Telemetry is
off (`MLFLOW_DISABLE_TELEMETRY`, `DO_NOT_TRACK`) unless the environment already says otherwise.
For an HTTP server, a TCP probe with a short timeout runs first, so an unreachable server fails
in seconds (the caller warns and keeps the local record) instead of retrying for minutes.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sys
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from experiments.tracking.values import check_step, flatten_metrics, flatten_params

# MLflow's limits per log_batch request and per param value (mlflow.utils.validation).
MLFLOW_MAX_METRICS_PER_BATCH = 1000
MLFLOW_MAX_PARAMS_PER_BATCH = 100
MLFLOW_MAX_PARAM_LENGTH = 6000
# Queued async metric batches waited on together, so a long run keeps few futures around.
MLFLOW_MAX_PENDING_BATCHES = 100


class _EventFile:
    """An append-only TFRecord file of `Event` protos, written with tensorboard's RecordWriter.

    Flushed to the OS after each record, so a killed process leaves whole records; fsync only
    on close (tensorboardX's writer fsyncs on every flush, ~5 ms each).
    """

    def __init__(self, logdir: Path):
        from tensorboard.summary.writer.record_writer import RecordWriter

        name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}"
        self.path = logdir / name
        self._file = self.path.open("ab")
        self._records = RecordWriter(self._file)

    def write(self, payload: bytes) -> None:
        self._records.write(payload)
        self._records.flush()

    def close(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._records.close()


class TensorBoardTracker:
    """Scalars and a params table as TensorBoard event files (protos from tensorboardX).

    One event per `log_metrics` call holds every value, written synchronously and flushed,
    so a killed run's curves are on disk up to its last log call. (`SummaryWriter.add_scalar`
    puts each value through a locked multiprocessing queue, ~0.2-0.5 ms a value, and its
    flush fsyncs; together they dominated logging time.)
    """

    def __init__(self, workdir: str | os.PathLike, subdir: str = "tensorboard"):
        from tensorboardX import summary
        from tensorboardX.proto.event_pb2 import Event
        from tensorboardX.proto.summary_pb2 import Summary

        self._event_cls, self._summary_cls, self._text = Event, Summary, summary.text
        self.logdir = Path(workdir) / subdir
        self.logdir.mkdir(parents=True, exist_ok=True)
        self._events = _EventFile(self.logdir)
        self._events.write(Event(wall_time=time.time(),
                                 file_version="brain.Event:2").SerializeToString())
        self._params_calls = 0

    def _write(self, step: int, summary) -> None:
        event = self._event_cls(wall_time=time.time(), step=step, summary=summary)
        self._events.write(event.SerializeToString())

    def log_params(self, params: Mapping[str, Any]) -> None:
        rows = [f"| {name} | {json.dumps(value)} |" for name, value in
                sorted(flatten_params(params).items())]
        table = "| name | value |\n|---|---|\n" + "\n".join(rows)
        self._write(self._params_calls, self._text("params", table))
        self._params_calls += 1

    def log_metrics(self, step: int, metrics: Mapping[str, Any]) -> None:
        values = [self._summary_cls.Value(tag=name, simple_value=float(value))
                  for name, value in flatten_metrics(metrics).items()]
        self._write(check_step(step), self._summary_cls(value=values))

    def log_artifact(self, path: str | os.PathLike) -> None:
        del path  # TensorBoard has no artifact store; the local backend keeps the copy.

    def finish(self, status: str = "finished") -> None:
        del status
        self._events.close()


def disable_mlflow_telemetry() -> None:
    """Turn MLflow's usage telemetry off unless the user set the variables themselves."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")


def check_server_reachable(uri: str, timeout_s: float) -> None:
    """TCP-connect to an http(s) tracking server; ConnectionError naming it if that fails."""
    parts = urlsplit(uri)
    host = parts.hostname or "localhost"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as error:
        raise ConnectionError(
            f"MLflow tracking server {parts.scheme}://{host}:{port} is unreachable "
            f"({error}); check MLFLOW_TRACKING_URI"
        ) from error


_MLFLOW_BAD_KEY_CHARS = re.compile(r"[^\w\-. /:]")


def mlflow_key(name: str) -> str:
    """A metric/param name MLflow accepts (letters, digits, _ - . space / :)."""
    return _MLFLOW_BAD_KEY_CHARS.sub("_", name)


def _param_text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text[:MLFLOW_MAX_PARAM_LENGTH]


class MLflowTracker:
    """One MLflow run, logged through `MlflowClient` (no global fluent-API state).

    Args:
      workdir: the run directory (holds the default SQLite store and artifact root).
      run_name: MLflow run name.
      experiment_name: MLflow experiment (created when missing).
      tracking_uri: store URI; default `MLFLOW_TRACKING_URI`, else `sqlite:///<workdir>/mlflow.db`.
      connect_timeout_s: timeout of the reachability probe for http(s) servers.
      async_logging: queue metric batches to MLflow's background logging thread; `finish`
        waits for them. That thread still holds the GIL for ~0.5-1 ms per value on a SQLite
        store; `experiments.tracking.mlflow_process.MLflowProcessTracker` (what `start_run` uses)
        moves all of it out of the training process.
      source_name: the command recorded as `mlflow.source.name` (default: sys.argv).
    """

    def __init__(
        self,
        workdir: str | os.PathLike,
        run_name: str | None = None,
        experiment_name: str = "learned-opt",
        tracking_uri: str | None = None,
        connect_timeout_s: float = 3.0,
        async_logging: bool = True,
        source_name: str | None = None,
    ):
        workdir = Path(workdir).resolve()
        tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        artifact_location = None
        if not tracking_uri:
            tracking_uri = f"sqlite:///{workdir / 'mlflow.db'}"
            # A SQLite store's default artifact root is ./mlruns of the *current* directory.
            artifact_location = (workdir / "mlartifacts").as_uri()
        if tracking_uri.startswith(("http://", "https://")):
            check_server_reachable(tracking_uri, connect_timeout_s)
            # Bound MLflow's own retries so a server dying mid-run costs seconds, not minutes.
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
        disable_mlflow_telemetry()
        from mlflow import MlflowClient
        from mlflow.entities import Metric, Param

        self._metric_cls, self._param_cls = Metric, Param
        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri)
        experiment = self.client.get_experiment_by_name(experiment_name)
        if experiment is None:
            experiment_id = self.client.create_experiment(
                experiment_name, artifact_location=artifact_location
            )
        else:
            experiment_id = experiment.experiment_id
        run = self.client.create_run(
            experiment_id,
            run_name=run_name or workdir.name,
            tags={"workdir": str(workdir),
                  "mlflow.source.name": source_name or " ".join(sys.argv)[:500]},
        )
        self.run_id = run.info.run_id
        self._logged_params: dict[str, str] = {}
        self.async_logging = async_logging
        self._pending_operations: list = []

    def log_params(self, params: Mapping[str, Any]) -> None:
        new = []
        for name, value in flatten_params(params).items():
            key, text = mlflow_key(name), _param_text(value)
            if key in self._logged_params:
                if self._logged_params[key] != text:
                    warnings.warn(
                        f"MLflow params are immutable: {key!r} stays "
                        f"{self._logged_params[key]!r}, not {text!r} (params.json has the new "
                        "value)", RuntimeWarning, stacklevel=2,
                    )
                continue
            self._logged_params[key] = text
            new.append(self._param_cls(key, text))
        for start in range(0, len(new), MLFLOW_MAX_PARAMS_PER_BATCH):
            chunk = new[start:start + MLFLOW_MAX_PARAMS_PER_BATCH]
            self.client.log_batch(self.run_id, params=chunk)

    def log_metrics(self, step: int, metrics: Mapping[str, Any]) -> None:
        step = check_step(step)
        timestamp_ms = int(time.time() * 1000)
        rows = [self._metric_cls(mlflow_key(name), float(value), timestamp_ms, step)
                for name, value in flatten_metrics(metrics).items()]
        for start in range(0, len(rows), MLFLOW_MAX_METRICS_PER_BATCH):
            operation = self.client.log_batch(
                self.run_id, metrics=rows[start:start + MLFLOW_MAX_METRICS_PER_BATCH],
                synchronous=not self.async_logging,
            )
            if operation is not None:
                self._pending_operations.append(operation)
        if len(self._pending_operations) >= MLFLOW_MAX_PENDING_BATCHES:
            self._wait_pending()  # bounds memory, and surfaces a failing store mid-run

    def _wait_pending(self) -> None:
        operations, self._pending_operations = self._pending_operations, []
        for operation in operations:
            operation.wait()  # raises if a queued batch failed

    def log_artifact(self, path: str | os.PathLike) -> None:
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path=path.name)
        else:
            self.client.log_artifact(self.run_id, str(path))

    def finish(self, status: str = "finished") -> None:
        """End the MLflow run as FINISHED (or FAILED for status="failed")."""
        self._wait_pending()
        self.client.set_terminated(self.run_id, "FAILED" if status == "failed" else "FINISHED")
