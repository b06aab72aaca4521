"""Identity records for a run (which data, which optimizer) and the end-of-run predictions table.

    tracker.log_params({
        "dataset": run_records.dataset_identity(task),
        "optimizer": run_records.optimizer_identity(lopt, pretrained="mlp_digits_v1"),
    })
    run_records.log_predictions_table(tracker, step, inputs, predictions, targets)
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from experiments.measure.tables import records_table
from experiments.tracking.values import to_jsonable


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file, or of a directory (relative names and contents of all files, sorted)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"cannot hash {str(path)!r}: it does not exist")
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        with file.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def dataset_identity(task: Any) -> dict[str, Any]:
    """Name, split sizes and content fingerprint of a task's data (its `dataset_info()`)."""
    info_fn = getattr(task, "dataset_info", None)
    info = dict(info_fn()) if callable(info_fn) else {}
    info.setdefault("task", getattr(task, "name", type(task).__name__))
    return to_jsonable(info)


def optimizer_identity(
    optimizer: Any,
    config: Mapping[str, Any] | None = None,
    *,
    pretrained: str | None = None,
    checkpoint: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Which optimizer ran: name, hyperparameters, and where learned weights came from.

    Args:
      optimizer: a name ("adam") or an object with `.name` (and `.config()`, as learned
        optimizers have).
      config: hyperparameters (default: `optimizer.config()` when it exists).
      pretrained: name of shipped pretrained weights, if used.
      checkpoint: path of a meta-parameter checkpoint (file or directory), hashed with sha256.
    """
    if isinstance(optimizer, str):
        name = optimizer
    else:
        name = getattr(optimizer, "name", None) or type(optimizer).__name__
        if config is None and callable(getattr(optimizer, "config", None)):
            config = optimizer.config()
    identity: dict[str, Any] = {"name": name, "config": to_jsonable(dict(config or {}))}
    if pretrained is not None:
        identity["pretrained"] = pretrained
    if checkpoint is not None:
        identity["checkpoint"] = str(Path(checkpoint).resolve())
        identity["checkpoint_sha256"] = file_sha256(checkpoint)
    return identity


def _cell(value: Any, max_values: int = 6) -> str:
    """One table cell: scalars as numbers, strings as is, arrays as a short preview + shape."""
    if isinstance(value, str):
        return value
    array = np.asarray(value)
    if array.ndim == 0:
        item = array.item()
        return f"{item:.4g}" if isinstance(item, float) else str(item)
    flat = array.reshape(-1)
    preview = ", ".join(f"{x:.3g}" if array.dtype.kind == "f" else str(x)
                        for x in flat[:max_values])
    more = ", ..." if flat.size > max_values else ""
    return f"[{preview}{more}] {tuple(array.shape)}"


def predictions_rows(
    inputs: Sequence[Any], predictions: Sequence[Any], targets: Sequence[Any], max_rows: int
) -> list[dict[str, str]]:
    """Rows {index, input, prediction, target, correct} for the first `max_rows` examples."""
    lengths = {len(inputs), len(predictions), len(targets)}
    if len(lengths) != 1:
        raise ValueError(
            f"inputs, predictions and targets must have the same length, got {len(inputs)}, "
            f"{len(predictions)}, {len(targets)}"
        )
    rows = []
    for index in range(min(max_rows, len(inputs))):
        prediction, target = predictions[index], targets[index]
        row = {"index": str(index), "input": _cell(inputs[index]),
               "prediction": _cell(prediction), "target": _cell(target)}
        if np.shape(prediction) == np.shape(target):
            row["correct"] = str(bool(np.all(np.asarray(prediction) == np.asarray(target))))
        rows.append(row)
    return rows


def markdown_table(rows: Sequence[Mapping[str, str]]) -> str:
    """A GitHub-markdown table of rows sharing keys (pipes in cells escaped)."""
    return records_table(rows, fmt=str)


def log_predictions_table(
    tracker: Any,
    step: int,
    inputs: Sequence[Any],
    predictions: Sequence[Any],
    targets: Sequence[Any],
    *,
    max_rows: int = 16,
    name: str = "predictions",
) -> str:
    """Write `<name>_step<step>.csv` and `.md` (sample predictions vs. ground truth) as artifacts.

    Inputs may be strings (decoded text) or arrays (shown as a short preview and their shape).
    Logs the accuracy over the shown rows as "<name>/shown_accuracy" when a `correct` column
    exists. Returns the markdown table.
    """
    rows = predictions_rows(inputs, predictions, targets, max_rows)
    table = markdown_table(rows)
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with tempfile.TemporaryDirectory() as tmp:
        for suffix, text in (("csv", buffer.getvalue()), ("md", table)):
            path = Path(tmp) / f"{name}_step{step}.{suffix}"
            path.write_text(text)
            tracker.log_artifact(path)
    if rows and "correct" in rows[0]:
        shown = np.mean([row["correct"] == "True" for row in rows])
        tracker.log_metrics(step, {f"{name}/shown_accuracy": float(shown)})
    return table
