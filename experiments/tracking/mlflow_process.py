"""MLflow logging from a child process, so the training loop never pays for MLflow's store.

MLflow's SQLAlchemy store spends ~0.5-1 ms of Python per metric value (ORM inserts plus
"latest metric" upkeep); in-process, even on MLflow's async thread, that holds the GIL and
slowed a 2,000-step loop logging 16 values every 10 steps several-fold. Here the loop only
pickles one small dict per log call onto a queue; a spawned process runs `MLflowTracker`.

    tracker = MLflowProcessTracker(workdir, run_name="adam_seed0")   # returns at once
    tracker.log_metrics(10, {"train/loss": 0.5})
    tracker.finish()        # waits until the child has written everything and ended the run

Failures surface as exceptions from the next call (the CompositeTracker then warns and drops
the backend; the local record is complete). An HTTP server is probed from the parent before
the child starts, so an unreachable server fails in seconds. If the parent dies, the child
notices within `poll_s`, marks the MLflow run KILLED and exits.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from experiments.tracking.values import check_step, flatten_metrics, to_jsonable


def _worker(requests, replies, kwargs: dict[str, Any], parent_pid: int, poll_s: float) -> None:
    """Child process: one MLflowTracker, fed by `requests` until "finish" or parent death."""
    from experiments.tracking.backends import MLflowTracker

    try:
        tracker = MLflowTracker(**kwargs, async_logging=False)
    except Exception as error:  # noqa: BLE001 - reported to the parent, which decides
        replies.put(("error", f"could not start the MLflow run: {type(error).__name__}: {error}"))
        return
    replies.put(("started", tracker.run_id))
    while True:
        try:
            method, args = requests.get(timeout=poll_s)
        except queue.Empty:
            if os.getppid() != parent_pid:  # parent gone without finish(): killed
                tracker.client.set_terminated(tracker.run_id, "KILLED")
                return
            continue
        try:
            getattr(tracker, method)(*args)
        except Exception as error:  # noqa: BLE001
            replies.put(("error", f"MLflow {method} failed: {type(error).__name__}: {error}"))
            return
        if method == "finish":
            replies.put(("finished", tracker.run_id))
            return


class MLflowProcessTracker:
    """`MLflowTracker` run in a spawned child process (same arguments, same records)."""

    def __init__(
        self,
        workdir: str | os.PathLike,
        run_name: str | None = None,
        experiment_name: str = "learned-opt",
        tracking_uri: str | None = None,
        connect_timeout_s: float = 3.0,
        finish_timeout_s: float = 300.0,
        poll_s: float = 2.0,
    ):
        from experiments.tracking.backends import check_server_reachable

        tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if tracking_uri and tracking_uri.startswith(("http://", "https://")):
            check_server_reachable(tracking_uri, connect_timeout_s)
        workdir = Path(workdir).resolve()
        kwargs = {"workdir": str(workdir), "run_name": run_name or workdir.name,
                  "experiment_name": experiment_name, "tracking_uri": tracking_uri,
                  "connect_timeout_s": connect_timeout_s,
                  "source_name": " ".join(sys.argv)[:500]}
        # spawn, not fork: forking a process that runs JAX's threads can deadlock.
        context = multiprocessing.get_context("spawn")
        self._requests, self._replies = context.Queue(), context.Queue()
        self._process = context.Process(
            target=_worker, args=(self._requests, self._replies, kwargs, os.getpid(), poll_s),
            daemon=True, name="mlflow-logger",
        )
        self._process.start()
        self.finish_timeout_s = finish_timeout_s
        self.run_id: str | None = None
        self._closed = False

    def _check_replies(self, block_s: float | None = None) -> tuple | None:
        """Raise the child's error if it reported one; return the latest other reply."""
        latest = None
        while True:
            try:
                if block_s:
                    reply = self._replies.get(timeout=block_s)
                else:
                    reply = self._replies.get_nowait()
            except queue.Empty:
                return latest
            block_s = None
            if reply[0] == "error":
                self._closed = True
                raise RuntimeError(reply[1])
            if reply[0] == "started":
                self.run_id = reply[1]
            latest = reply

    def _send(self, method: str, *args) -> None:
        if self._closed:
            raise RuntimeError("MLflow logger process is closed")
        self._check_replies()
        if not self._process.is_alive() and self._replies.empty():
            self._closed = True
            raise RuntimeError(f"MLflow logger process died (exit code {self._process.exitcode})")
        self._requests.put((method, args))

    def log_params(self, params: Mapping[str, Any]) -> None:
        self._send("log_params", to_jsonable(params))

    def log_metrics(self, step: int, metrics: Mapping[str, Any]) -> None:
        self._send("log_metrics", check_step(step), flatten_metrics(metrics))

    def log_artifact(self, path: str | os.PathLike) -> None:
        self._send("log_artifact", str(Path(path).resolve()))

    def finish(self, status: str = "finished") -> None:
        """Wait (up to finish_timeout_s) until every queued record is written and the run ended."""
        if self._closed:
            return
        self._send("finish", status)
        self._closed = True
        deadline_reply = None
        while deadline_reply is None or deadline_reply[0] != "finished":
            deadline_reply = self._check_replies(block_s=self.finish_timeout_s)
            if deadline_reply is None:
                self._process.kill()
                raise TimeoutError(
                    f"MLflow logger did not finish within {self.finish_timeout_s} s; the local "
                    "record is complete"
                )
        self._process.join(timeout=30)
