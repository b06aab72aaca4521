"""Input validation shared by every evaluation function: one clear ValueError per problem.

    labels, probs = check_labels_probs(labels, probs)   # int64 (N,), float64 (N, C)
"""

from __future__ import annotations

import numpy as np

PROB_ATOL = 1e-3  # rows of `probs` must sum to 1 within this (float32 softmax outputs do)


def check_probs(probs, *, name: str = "probs", atol: float = PROB_ATOL) -> np.ndarray:
    """`probs` as float64 (N, C): finite, in [0, 1], rows summing to 1 within `atol` (then
    renormalised to sum to 1 exactly, so float32 round-off never reaches sklearn)."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] < 2:
        raise ValueError(f"{name} must have shape (num_examples, num_classes >= 2); "
                         f"got shape {probs.shape}")
    if probs.shape[0] == 0:
        raise ValueError(f"{name} is empty (0 examples)")
    if not np.all(np.isfinite(probs)):
        raise ValueError(f"{name} holds {int(np.sum(~np.isfinite(probs)))} non-finite values")
    if probs.min() < 0 or probs.max() > 1:
        raise ValueError(f"{name} must lie in [0, 1]; got range [{probs.min():.4g}, "
                         f"{probs.max():.4g}]")
    sums = probs.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1) > atol)
    if len(bad):
        raise ValueError(f"{name} rows must sum to 1 (tolerance {atol}); {len(bad)} rows do "
                         f"not, e.g. row {bad[0]} sums to {sums[bad[0]]:.6g}")
    return probs / sums[:, None]


def check_labels(labels, num_classes: int | None = None, *, name: str = "labels") -> np.ndarray:
    """`labels` as int64 (N,): integers in [0, num_classes) (any non-negative if None)."""
    array = np.asarray(labels)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one class index per example); got shape "
                         f"{array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} is empty (0 examples)")
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
            raise ValueError(f"{name} must be integer class indices; got non-integer values")
    elif array.dtype.kind not in "iub":
        raise ValueError(f"{name} must be integer class indices; got dtype {array.dtype}")
    array = array.astype(np.int64)
    high = num_classes if num_classes is not None else None
    if array.min() < 0 or (high is not None and array.max() >= high):
        valid = f"[0, {high})" if high is not None else "[0, inf)"
        raise ValueError(f"{name} must lie in the class range {valid}; got values from "
                         f"{array.min()} to {array.max()}")
    return array


def check_same_length(**arrays) -> int:
    """The common length of the named arrays, else a ValueError listing every length."""
    lengths = {name: len(np.asarray(value)) for name, value in arrays.items()}
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{name}={n}" for name, n in lengths.items())
        raise ValueError(f"arrays must have the same number of examples; got {shown}")
    return next(iter(lengths.values()))


def check_labels_probs(labels, probs, *, atol: float = PROB_ATOL):
    """Validated (labels int64 (N,), probs float64 (N, C)) of the same length, labels < C."""
    probs = check_probs(probs, atol=atol)
    labels_array = np.asarray(labels)
    check_same_length(labels=labels_array, probs=probs)
    return check_labels(labels_array, probs.shape[1]), probs


def check_labels_preds(labels, preds, num_classes: int | None = None):
    """Validated (labels, predicted classes) of the same length, both in the class range."""
    labels, preds = np.asarray(labels), np.asarray(preds)
    check_same_length(labels=labels, preds=preds)
    return (check_labels(labels, num_classes, name="labels"),
            check_labels(preds, num_classes, name="preds"))


def check_choice(value: str, choices, *, name: str) -> str:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; expected one of {tuple(choices)}")
    return value
