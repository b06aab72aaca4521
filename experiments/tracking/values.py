"""Values as trackers record them: steps, scalar metrics, JSON-able configs and params.

Shared by every backend so that bad input fails the same way everywhere:

    flatten_metrics({"train": {"loss": jnp.float32(0.5)}})  # -> {"train/loss": 0.5}
    flatten_metrics({"w": jnp.ones(3)})     # ValueError: metric 'w' must be a scalar, ... (3,)
    to_jsonable(config_dict)                 # ConfigDict / dataclass / NumPy -> plain JSON

NaN and infinities stay what they are; JSON files write them as the bare tokens `NaN`,
`Infinity`, `-Infinity`, which Python's `json` reads back.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np


def check_step(step: Any) -> int:
    """`step` as a Python int; ValueError/TypeError for anything else."""
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)):
        if isinstance(step, np.ndarray) and step.ndim == 0 and step.dtype.kind in "iu":
            return int(step)
        if hasattr(step, "shape") and getattr(step, "shape", None) == () and hasattr(step, "dtype"):
            if np.dtype(step.dtype).kind in "iu":
                return int(step)
        raise TypeError(f"step must be an int, got {type(step).__name__} {step!r}")
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    return int(step)


def flatten_metrics(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float | int]:
    """Nested mapping of scalars -> flat {"a/b": python number}, fetching device arrays once.

    Accepts Python numbers, NumPy scalars and 0-d (or size-1) arrays, including jax arrays
    (fetched in one `jax.device_get` for the whole mapping). NaN and inf are kept.

    Raises:
      ValueError: a value has more than one element (names the key and the shape).
      TypeError: a value is not a number (names the key and the type).
    """
    if not isinstance(metrics, Mapping):
        raise TypeError(
            f"metrics must be a mapping of name -> scalar, got {type(metrics).__name__}"
        )
    if any(hasattr(v, "addressable_shards") for v in _leaves(metrics)):
        from experiments.tracking.metrics_buffer import fetch_to_host

        metrics = fetch_to_host(metrics)
    flat: dict[str, float | int] = {}
    _flatten_into(flat, metrics, prefix)
    return flat


def _leaves(tree: Any) -> Iterable[Any]:
    if isinstance(tree, Mapping):
        for value in tree.values():
            yield from _leaves(value)
    else:
        yield tree


def _flatten_into(flat: dict, metrics: Mapping, prefix: str) -> None:
    for key, value in metrics.items():
        if not isinstance(key, str) or not key:
            raise TypeError(f"metric names must be non-empty strings, got {key!r}")
        name = f"{prefix}/{key}" if prefix else key
        if isinstance(value, Mapping):
            _flatten_into(flat, value, name)
        else:
            flat[name] = to_scalar(name, value)


def to_scalar(name: str, value: Any) -> float | int:
    """One metric value as a Python int or float; clear errors for arrays and non-numbers."""
    if isinstance(value, bool | np.bool_):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value
    if isinstance(value, np.floating):  # the common case after a fetch: skip the array path
        return float(value)
    shape = getattr(value, "shape", None)
    if shape is not None:
        if math.prod(shape) != 1:
            raise ValueError(
                f"metric {name!r} must be a scalar, got an array of shape {tuple(shape)}; "
                "reduce it (e.g. .mean()) or log its elements under separate names"
            )
        array = np.asarray(value).reshape(())
        if array.dtype.kind == "b":
            return int(array)
        if array.dtype.kind in "iu":
            return int(array)
        if array.dtype.kind == "f":
            return float(array)
        raise TypeError(f"metric {name!r} has dtype {array.dtype}; expected a real number")
    raise TypeError(
        f"metric {name!r} must be a number or a 0-d array, got {type(value).__name__} {value!r}"
    )


def to_jsonable(value: Any) -> Any:
    """Config / params value -> JSON-able (ConfigDict, dataclasses, NumPy, tuples, paths)."""
    if hasattr(value, "to_dict") and callable(value.to_dict):  # ml_collections ConfigDict
        return to_jsonable(value.to_dict())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    shape = getattr(value, "shape", None)
    if shape is not None and int(np.prod(shape)) <= 64:
        return np.asarray(value).tolist()
    return repr(value)


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested params -> flat {"a.b": JSON-able leaf}; lists stay leaves."""
    flat: dict[str, Any] = {}
    for key, value in to_jsonable(params).items():
        name = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict) and value:
            flat.update(flatten_params(value, name))
        else:
            flat[name] = value
    return flat


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON via a temp file + rename, so a reader never sees half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def read_metrics(workdir: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of `workdir/metrics.jsonl`; a truncated last line (killed mid-write) is skipped."""
    path = Path(workdir) / "metrics.jsonl"
    rows = []
    with path.open() as f:
        lines = f.read().split("\n")
    for index, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if index == len(lines) - 1:  # the only line a kill can cut short
                break
            raise
    return rows
