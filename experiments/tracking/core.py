"""Experiment tracking: one small `Tracker` protocol, composable backends, a no-op default.

Every script records its run through a tracker:

    from experiments import tracking
    tracker = tracking.start_run(workdir, config=config, backends=("local", "tensorboard"))
    tracker.log_params({"optimizer": tracking.optimizer_identity(lopt)})
    tracker.log_metrics(step, {"train/loss": loss, "train/accuracy": acc})
    tracker.log_artifact("plot.png")
    tracker.finish()

Library code takes a tracker argument defaulting to `NullTracker()`.

The local backend is always on and needs nothing installed. A workdir holds:
- `config.json`  the run's config (ml_collections ConfigDict or dict);
- `env.json`     code version, command line, packages, devices (see `experiments.tracking.envinfo`);
- `git_diff.patch` the uncommitted tracked changes, when the checkout is dirty;
- `params.json`  everything passed to `log_params` (merged);
- `metrics.jsonl` one JSON object per `log_metrics` call, always with `"step"`; append-only and
  flushed after each line, so a run killed mid-way leaves every line up to its last log call.
  NaN and infinities are written as the bare tokens `NaN`, `Infinity`, `-Infinity` (what
  Python's `json` writes and reads back; `read_metrics` parses them); they are never dropped;
- `run.json`     status ("running" until `finish`, then "finished"), start and end times;
- `artifacts/`   copies of logged files.

Optional backends: "tensorboard" (tensorboardX event files in `workdir/tensorboard`) and
"mlflow" (SQLite store `workdir/mlflow.db` unless `MLFLOW_TRACKING_URI` says otherwise); see
`experiments.tracking.backends`. A failing optional backend warns and stops; the local record
is never lost.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from experiments.tracking.values import check_step, flatten_metrics, to_jsonable, write_json_atomic

BACKENDS: tuple[str, ...] = ("local", "tensorboard", "mlflow")
RUN_STATUSES: tuple[str, ...] = ("finished", "failed")


@runtime_checkable
class Tracker(Protocol):
    """What every backend implements. Values are host scalars (see `flatten_metrics`)."""

    def log_params(self, params: Mapping[str, Any]) -> None: ...

    def log_metrics(self, step: int, metrics: Mapping[str, Any]) -> None: ...

    def log_artifact(self, path: str | os.PathLike) -> None: ...

    def finish(self, status: str = "finished") -> None: ...


# ----------------------------------------------------------------------------------------------
# Backends.


class NullTracker:
    """Accepts everything, records nothing: the default for library code."""

    workdir = None

    def log_params(self, params: Mapping[str, Any]) -> None:
        del params

    def log_metrics(self, step: int, metrics: Mapping[str, Any]) -> None:
        del step, metrics

    def log_artifact(self, path: str | os.PathLike) -> None:
        del path

    def finish(self, status: str = "finished") -> None:
        del status

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.finish()


def check_writable_workdir(workdir: str | os.PathLike) -> Path:
    """Create `workdir` and prove it writable; PermissionError/NotADirectoryError naming it."""
    path = Path(workdir).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"workdir {str(path)!r} exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write_test."):
            pass
    except OSError as error:
        raise PermissionError(
            f"workdir {str(path)!r} is not writable ({error.strerror or error}); "
            "pass a --workdir you can write to"
        ) from error
    return path


class LocalTracker:
    """The always-on backend: plain files in the workdir (layout in the module docstring)."""

    def __init__(
        self,
        workdir: str | os.PathLike,
        config: Any = None,
        env: Mapping[str, Any] | None = None,
        git_diff: bytes | None = None,
    ):
        self.workdir = check_writable_workdir(workdir)
        self.artifacts_dir = self.workdir / "artifacts"
        self._params: dict[str, Any] = {}
        self._start_time = time.time()
        self._finished = False
        if config is not None:
            write_json_atomic(self.workdir / "config.json", to_jsonable(config))
        if env is not None:
            write_json_atomic(self.workdir / "env.json", to_jsonable(env))
        if git_diff:
            (self.workdir / "git_diff.patch").write_bytes(git_diff)
        self._write_run_status("running")
        # Line-buffered append: every row reaches the OS when written; a kill loses nothing
        # already logged (fsync is not needed for that, only for power loss).
        self._metrics_file = (self.workdir / "metrics.jsonl").open("a", buffering=1)

    def _write_run_status(self, status: str) -> None:
        run = {"status": status, "start_time_unix": self._start_time, "pid": os.getpid()}
        if status != "running":
            run["end_time_unix"] = time.time()
            run["duration_s"] = run["end_time_unix"] - self._start_time
        write_json_atomic(self.workdir / "run.json", run)

    def log_params(self, params: Mapping[str, Any]) -> None:
        self._params.update(to_jsonable(params))
        write_json_atomic(self.workdir / "params.json", self._params)

    def log_metrics(self, step: int, metrics: Mapping[str, Any]) -> None:
        row = {"step": check_step(step), "time": time.time()}
        row.update(flatten_metrics(metrics))
        self._metrics_file.write(json.dumps(row, allow_nan=True) + "\n")
        self._metrics_file.flush()

    def log_artifact(self, path: str | os.PathLike) -> Path:
        """Copy a file or directory into `workdir/artifacts/`; returns the copy's path."""
        source = Path(path)
        if not source.exists():
            raise FileNotFoundError(f"artifact {str(source)!r} does not exist")
        self.artifacts_dir.mkdir(exist_ok=True)
        target = self.artifacts_dir / source.name
        if source.resolve() == target.resolve():
            return target
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True)
        else:
            shutil.copy2(source, target)
        return target

    def finish(self, status: str = "finished") -> None:
        if self._finished:
            return
        self._finished = True
        self._metrics_file.close()
        self._write_run_status(status)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        self.finish("failed" if exc_type is not None else "finished")


class CompositeTracker:
    """Fans every call out to several trackers.

    The first tracker is the primary record (the local one): its errors propagate. Any other
    backend that raises gets a warning and is dropped, so a dead MLflow server never stops a
    run or costs the local record. Metrics are checked and fetched to host once, up front, so
    bad input fails the same way whatever the backends.
    """

    def __init__(self, trackers: Sequence[Tracker]):
        if not trackers:
            raise ValueError("CompositeTracker needs at least one tracker")
        self.trackers = list(trackers)

    @property
    def workdir(self):
        return getattr(self.trackers[0], "workdir", None)

    def _call(self, method: str, *args) -> Any:
        result = getattr(self.trackers[0], method)(*args)
        for tracker in list(self.trackers[1:]):
            self._call_optional(tracker, method, *args)
        return result

    def _call_optional(self, tracker: Tracker, method: str, *args) -> None:
        try:
            getattr(tracker, method)(*args)
        except Exception as error:  # noqa: BLE001 - an optional backend must not kill a run
            warnings.warn(
                f"tracking backend {type(tracker).__name__} failed in {method} and is now "
                f"off for this run ({type(error).__name__}: {error}); the local record in "
                f"{self.workdir} is complete",
                RuntimeWarning,
                stacklevel=4,
            )
            self.trackers.remove(tracker)

    def log_params(self, params: Mapping[str, Any]) -> None:
        self._call("log_params", to_jsonable(params))

    def log_metrics(self, step: int, metrics: Mapping[str, Any]) -> None:
        self._call("log_metrics", check_step(step), flatten_metrics(metrics))

    def log_artifact(self, path: str | os.PathLike) -> Any:
        """Copy into the workdir first; other backends get that lasting copy (the original may
        be a temporary file, gone before a background logger reads it)."""
        copy = self.trackers[0].log_artifact(path)
        for tracker in list(self.trackers[1:]):
            self._call_optional(tracker, "log_artifact", copy if copy is not None else path)
        return copy

    def finish(self, status: str = "finished") -> None:
        """Close every backend; `status` ("finished" or "failed") goes to run.json / MLflow."""
        if status not in RUN_STATUSES:
            raise ValueError(f"status must be one of {RUN_STATUSES}, got {status!r}")
        self._call("finish", status)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        self.finish("failed" if exc_type is not None else "finished")


def start_run(
    workdir: str | os.PathLike,
    config: Any = None,
    backends: Sequence[str] = ("local",),
    *,
    run_name: str | None = None,
    experiment_name: str = "learned-opt",
    collect_env: bool = True,
) -> CompositeTracker:
    """Open a run in `workdir`: write config.json and env.json, start the requested backends.

    Args:
      workdir: run directory (created; must be writable).
      config: the run's config (ConfigDict, dict or dataclass), written to config.json and
        logged as params by the optional backends.
      backends: any of "local", "tensorboard", "mlflow" ("local" is always on).
      run_name: name shown by TensorBoard / MLflow (default: the workdir's name).
      experiment_name: MLflow experiment.
      collect_env: record `experiments.tracking.envinfo.collect()` (git, packages, devices). This
        starts the JAX backend: set JAX config (device count, platforms) before start_run.

    Returns:
      A CompositeTracker whose first backend is the LocalTracker.

    Raises:
      ValueError: unknown backend name.
      PermissionError / NotADirectoryError: workdir cannot be written.
    """
    if isinstance(backends, str):
        backends = (backends,)
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        raise ValueError(f"unknown tracking backend(s) {unknown}; valid choices are {BACKENDS}")
    env = diff = None
    if collect_env:
        from experiments.tracking import envinfo

        env = envinfo.collect()
        if env["git"].get("dirty"):
            diff = envinfo.git_diff()
            if diff is not None and len(diff) > envinfo.MAX_DIFF_BYTES:
                diff = diff[: envinfo.MAX_DIFF_BYTES] + b"\n[diff truncated]\n"
    local = LocalTracker(workdir, config=config, env=env, git_diff=diff)
    run_name = run_name or local.workdir.name
    trackers: list[Tracker] = [local]
    for backend in dict.fromkeys(backends):
        if backend == "local":
            continue
        from experiments.tracking import backends as tracking_backends

        try:
            if backend == "tensorboard":
                trackers.append(tracking_backends.TensorBoardTracker(local.workdir))
            elif backend == "mlflow":
                from experiments.tracking.mlflow_process import MLflowProcessTracker

                trackers.append(MLflowProcessTracker(
                    local.workdir, run_name=run_name, experiment_name=experiment_name
                ))
        except Exception as error:  # noqa: BLE001 - the local record must survive
            warnings.warn(
                f"tracking backend {backend!r} could not start ({type(error).__name__}: {error}); "
                f"continuing with the local record in {local.workdir}",
                RuntimeWarning,
                stacklevel=2,
            )
    tracker = CompositeTracker(trackers)
    if config is not None:
        # config.json already holds it locally; the other backends get it as params.
        for extra in list(tracker.trackers[1:]):
            tracker._call_optional(extra, "log_params", {"config": to_jsonable(config)})
    return tracker


