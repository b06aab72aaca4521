"""The on-disk predictions of a finished run, and how to make them from a task and params.

A run directory holds one file per model (optimizer, seed, ...) that was evaluated:

    RUN/predictions/<name>.npz        (np.savez, loaded with allow_pickle=False)
      split      (N,) str      "valid" or "test" for each row (both splits must be present)
      ids        (N,) int64    example index within its split (task.full_split order), unique
                               per split
      labels     (N,) int64    true class, in [0, C)
      probs      (N, C) float  predicted class probabilities; rows sum to 1 (tolerance 1e-3)
      task_kind  () str        "classification" or "language_model"
      task       () str        task name ("" if unknown)
      train_labels        (M,) int64, optional: training labels (zero-rule / label baselines)
      slice_features      (N, F) float, optional: per-example metadata for slicing
      slice_feature_names (F,) str, required with slice_features
    RUN/predictions/<name>.behaviour.json   optional: `behavioural.default_checks` output

    preds = predict_task(task, params)                    # valid + test of a classification task
    save_predictions(run_dir, "adam_seed0", preds)
    preds = load_predictions(run_dir / "predictions" / "adam_seed0.npz")   # validated
    load_run_predictions(run_dir)                         # {name: Predictions}
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from experiments.evaluation.checks import (
    check_choice,
    check_labels,
    check_labels_probs,
    check_same_length,
)

FORMAT_VERSION = 1
PREDICTION_SPLITS = ("valid", "test")
TASK_KINDS = ("classification", "language_model")
_NAME = re.compile(r"^[A-Za-z0-9_.+-]+$")


@dataclasses.dataclass(frozen=True)
class Predictions:
    """One model's predictions on valid and test (see the module docstring for the fields)."""

    split: np.ndarray
    ids: np.ndarray
    labels: np.ndarray
    probs: np.ndarray
    task_kind: str = "classification"
    task: str = ""
    train_labels: np.ndarray | None = None
    slice_features: np.ndarray | None = None
    slice_feature_names: tuple[str, ...] = ()

    @property
    def num_classes(self) -> int:
        return int(self.probs.shape[1])

    def select(self, split: str) -> Predictions:
        """The rows of one split (ordered by id)."""
        check_choice(split, PREDICTION_SPLITS, name="split")
        rows = np.flatnonzero(self.split == split)
        rows = rows[np.argsort(self.ids[rows], kind="stable")]
        features = None if self.slice_features is None else self.slice_features[rows]
        return dataclasses.replace(self, split=self.split[rows], ids=self.ids[rows],
                                   labels=self.labels[rows], probs=self.probs[rows],
                                   slice_features=features)


def validate_predictions(preds: Predictions) -> Predictions:
    """Checked, normalised copy: dtypes, lengths, probabilities, splits, ids, features."""
    split = np.asarray(preds.split).astype(str)
    ids = np.asarray(preds.ids)
    labels, probs = check_labels_probs(preds.labels, preds.probs)
    check_same_length(split=split, ids=ids, labels=labels, probs=probs)
    check_choice(preds.task_kind, TASK_KINDS, name="task_kind")
    unknown = sorted(set(split.tolist()) - set(PREDICTION_SPLITS))
    if unknown:
        raise ValueError(f"split holds unknown split names {unknown}; expected "
                         f"{PREDICTION_SPLITS}")
    missing = [s for s in PREDICTION_SPLITS if not np.any(split == s)]
    if missing:
        raise ValueError(f"predictions hold no rows of split(s) {missing}; both valid and test "
                         "are needed (temperature is fitted on valid, reported on test)")
    if ids.dtype.kind not in "iu":
        raise ValueError(f"ids must be integer example indices; got dtype {ids.dtype}")
    for name in PREDICTION_SPLITS:
        split_ids = ids[split == name]
        if len(np.unique(split_ids)) != len(split_ids):
            raise ValueError(f"ids of split {name!r} are not unique")
    train_labels = preds.train_labels
    if train_labels is not None:
        train_labels = check_labels(train_labels, probs.shape[1], name="train_labels")
    features, names = preds.slice_features, tuple(str(n) for n in preds.slice_feature_names)
    if features is not None:
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2 or features.shape[0] != len(labels):
            raise ValueError(f"slice_features must be (num_rows={len(labels)}, F); got shape "
                             f"{features.shape}")
        if len(names) != features.shape[1]:
            raise ValueError(f"slice_feature_names has {len(names)} names for "
                             f"{features.shape[1]} slice_features columns")
        if not np.all(np.isfinite(features)):
            raise ValueError("slice_features holds non-finite values")
    elif names:
        raise ValueError("slice_feature_names given without slice_features")
    return dataclasses.replace(preds, split=split, ids=ids.astype(np.int64), labels=labels,
                               probs=probs, train_labels=train_labels, slice_features=features,
                               slice_feature_names=names)


def check_name(name: str) -> str:
    if not _NAME.match(name or ""):
        raise ValueError(f"predictions name {name!r} must be non-empty and use only letters, "
                         "digits and _ . + -")
    return name


def save_predictions(run_dir: str | Path, name: str, preds: Predictions) -> Path:
    """Validate and write `run_dir/predictions/<name>.npz`; returns its path."""
    preds = validate_predictions(preds)
    folder = Path(run_dir) / "predictions"
    folder.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, Any] = {
        "format_version": np.int64(FORMAT_VERSION), "split": preds.split, "ids": preds.ids,
        "labels": preds.labels, "probs": preds.probs.astype(np.float32),
        "task_kind": np.str_(preds.task_kind), "task": np.str_(preds.task)}
    if preds.train_labels is not None:
        arrays["train_labels"] = preds.train_labels
    if preds.slice_features is not None:
        arrays["slice_features"] = preds.slice_features
        arrays["slice_feature_names"] = np.asarray(preds.slice_feature_names, dtype=str)
    path = folder / f"{check_name(name)}.npz"
    np.savez(path, **arrays)
    return path


def load_predictions(path: str | Path) -> Predictions:
    """Read and validate one predictions file (ValueError naming the file and the problem)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: not a readable predictions .npz ({error})") from error
    required = ("split", "ids", "labels", "probs")
    missing = [key for key in required if key not in arrays]
    if missing:
        raise ValueError(f"{path}: missing arrays {missing}; a predictions file needs "
                         f"{required}")
    version = int(arrays.get("format_version", FORMAT_VERSION))
    if version != FORMAT_VERSION:
        raise ValueError(f"{path}: format_version {version}; this code reads {FORMAT_VERSION}")
    try:
        return validate_predictions(Predictions(
            split=arrays["split"], ids=arrays["ids"], labels=arrays["labels"],
            probs=arrays["probs"].astype(np.float64),
            task_kind=str(arrays.get("task_kind", "classification")),
            task=str(arrays.get("task", "")), train_labels=arrays.get("train_labels"),
            slice_features=arrays.get("slice_features"),
            slice_feature_names=tuple(arrays.get("slice_feature_names", ()))))
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from error


def prediction_files(run_dir: str | Path) -> dict[str, Path]:
    """{name: path} of `run_dir/predictions/*.npz`; ValueError if there are none."""
    folder = Path(run_dir) / "predictions"
    files = {p.stem: p for p in sorted(folder.glob("*.npz"))} if folder.is_dir() else {}
    if not files:
        raise ValueError(f"run directory {str(run_dir)!r} has no predictions: expected "
                         f"{folder}/<name>.npz (see experiments.evaluation.predictions)")
    return files


def load_run_predictions(run_dir: str | Path) -> dict[str, Predictions]:
    """Every predictions file of a run, validated, by name."""
    return {name: load_predictions(path) for name, path in prediction_files(run_dir).items()}


def save_behaviour(run_dir: str | Path, name: str, checks: dict) -> Path:
    """Write `run_dir/predictions/<name>.behaviour.json` (`behavioural.default_checks` output)."""
    path = Path(run_dir) / "predictions" / f"{check_name(name)}.behaviour.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(checks, indent=2, sort_keys=True) + "\n")
    return path


def summary_features(inputs) -> tuple[np.ndarray, tuple[str, ...]]:
    """Generic slice features of raw inputs: mean, std and max of each flattened example."""
    flat = np.asarray(inputs, dtype=np.float64).reshape(len(inputs), -1)
    features = np.stack([flat.mean(axis=1), flat.std(axis=1), flat.max(axis=1)], axis=1)
    return features, ("input_mean", "input_std", "input_max")


def outputs_to_probs(outputs) -> np.ndarray:
    """Network outputs -> probabilities: softmax of (N, C) logits; (N, 1) sigmoid logits become
    two columns [1 - p, p]."""
    from scipy import special

    outputs = np.asarray(outputs, dtype=np.float64)
    if outputs.ndim != 2:
        raise ValueError(f"outputs must be (N, C) logits; got shape {outputs.shape}")
    if outputs.shape[1] == 1:
        positive = special.expit(outputs[:, 0])
        return np.stack([1 - positive, positive], axis=1)
    return special.softmax(outputs, axis=1)


def snapshot_params(snapshots, seed_index: int = 0, eval_index: int = -1):
    """One parameter pytree out of `training.Curves.snapshots` (leaves (S, E, ...))."""
    import jax

    return jax.tree.map(lambda leaf: np.asarray(leaf)[seed_index, eval_index], snapshots)


def predict_task(task, params, predict: Callable | None = None, *,
                 splits=PREDICTION_SPLITS, batch_size: int = 1024,
                 slice_features: Callable | str | None = "summary") -> Predictions:
    """Predictions of a classification task's network on its full valid and test splits.

    Args:
      task: a task with `full_split(split) -> {"x", "y"}` (e.g. `models.get_task("digits_mlp")`).
      params: trained parameters (e.g. `snapshot_params(curves.snapshots)`).
      predict: `predict(params, x) -> logits`; default `task.net.apply`. Jitted here.
      batch_size: examples per forward pass.
      slice_features: "summary" (`summary_features` of the inputs), None, or a callable
        `fn(x) -> (features (N, F), names)`.

        preds = predict_task(models.get_task("mnist1d_mlp"), params)
    """
    import jax

    if not hasattr(task, "full_split"):
        raise ValueError(f"task {task!r} has no full_split(split); predict_task needs one")
    if getattr(task, "loss_kind", "softmax") == "mse":
        raise ValueError(f"task {getattr(task, 'name', task)!r} is a regression task; "
                         "predictions need class probabilities")
    predict = jax.jit(predict if predict is not None else task.net.apply)
    if isinstance(slice_features, str):
        check_choice(slice_features, ("summary",), name="slice_features")
        slice_features = summary_features
    columns: dict[str, list] = {"split": [], "ids": [], "labels": [], "probs": [], "feat": []}
    names: tuple[str, ...] = ()
    for split in splits:
        check_choice(split, PREDICTION_SPLITS, name="split")
        batch = task.full_split(split)
        x, y = np.asarray(batch["x"]), np.asarray(batch["y"])
        outputs = np.concatenate([np.asarray(predict(params, x[i:i + batch_size]))
                                  for i in range(0, len(x), batch_size)])
        columns["split"].append(np.full(len(x), split))
        columns["ids"].append(np.arange(len(x)))
        columns["labels"].append(y.astype(np.int64))
        columns["probs"].append(outputs_to_probs(outputs))
        if slice_features is not None:
            features, names = slice_features(x)
            columns["feat"].append(np.asarray(features, dtype=np.float64))
    data = getattr(task, "data", None)
    train_labels = getattr(data, "y_train", None)
    return validate_predictions(Predictions(
        split=np.concatenate(columns["split"]), ids=np.concatenate(columns["ids"]),
        labels=np.concatenate(columns["labels"]), probs=np.concatenate(columns["probs"]),
        task=str(getattr(task, "name", "")),
        train_labels=None if train_labels is None else np.asarray(train_labels),
        slice_features=np.concatenate(columns["feat"]) if columns["feat"] else None,
        slice_feature_names=tuple(names)))
