"""Offline datasets: fixed train / valid / test splits, train-only normalization, fingerprints.

Every dataset here is either bundled with an installed package (scikit-learn's digits),
generated procedurally on this machine (mnist1d, synthetic regression / logistic data), or read
from a file the user brings (see `models.file_loaders`). Nothing is downloaded.

    data = digits()                 # ArrayDataset, arrays already on device
    data.split("train")             # (x, y)
    data.info()                     # JSON-able: name, sizes, fingerprint, baselines

Splits are disjoint by construction (one fixed permutation, cut into three ranges) and
documented next to each loader. `valid` is for tuning and meta-objectives; `test` only for reports.
"""

from __future__ import annotations

import functools
import hashlib
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from learned_opt.tasks import check_split

# The seed of every fixed split permutation in this file. Changing it changes every split, so
# it is part of each dataset's fingerprint.
SPLIT_SEED = 0


class ArrayDataset(NamedTuple):
    """A supervised dataset held as device arrays, with fixed splits.

    x_* are float32 features (normalized with train statistics); y_* are int32 class labels
    for classification (`num_classes` > 0) or float32 targets for regression (`num_classes` 0).
    """

    name: str
    x_train: jax.Array
    y_train: jax.Array
    x_valid: jax.Array
    y_valid: jax.Array
    x_test: jax.Array
    y_test: jax.Array
    num_classes: int
    fingerprint: str

    def split(self, split: str) -> tuple[jax.Array, jax.Array]:
        """(x, y) of `split` in {"train", "valid", "test"}."""
        check_split(split)
        return getattr(self, f"x_{split}"), getattr(self, f"y_{split}")

    def info(self) -> dict:
        """JSON-able description: name, split sizes, fingerprint, test-split baselines."""
        info = {
            "name": self.name,
            "fingerprint": self.fingerprint,
            "input_shape": list(self.x_train.shape[1:]),
            "split_sizes": {s: int(self.split(s)[0].shape[0]) for s in ("train", "valid", "test")},
            "split_seed": SPLIT_SEED,
        }
        if self.num_classes > 0:
            info["num_classes"] = self.num_classes
            info.update(classification_baselines(self.y_train, self.y_test, self.num_classes))
        return info


def fingerprint(*arrays: np.ndarray | jax.Array, extra: str = "") -> str:
    """Short hex sha256 of the arrays' dtypes, shapes and bytes (plus `extra`), for tracking."""
    digest = hashlib.sha256(extra.encode())
    for array in arrays:
        array = np.ascontiguousarray(np.asarray(array))
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:16]


def classification_baselines(y_train, y_test, num_classes: int) -> dict:
    """Accuracy on the test split of guessing uniformly and of always predicting the train majority.

    The zero-rule (majority-class) predictor is fit on train only, then scored on test.
    """
    y_train, y_test = np.asarray(y_train), np.asarray(y_test)
    majority = int(np.bincount(y_train, minlength=num_classes).argmax())
    return {
        "random_guess_accuracy": 1.0 / num_classes,
        "zero_rule_accuracy": float(np.mean(y_test == majority)),
        "zero_rule_class": majority,
    }


def split_indices(n: int, valid: int, test: int, seed: int = SPLIT_SEED):
    """Disjoint (train, valid, test) index arrays from one fixed permutation of range(n)."""
    if valid + test >= n:
        raise ValueError(f"valid ({valid}) + test ({test}) must be smaller than n ({n})")
    perm = np.random.default_rng(seed).permutation(n)
    return perm[valid + test :], perm[:valid], perm[valid : valid + test]


def standardize(x_train: np.ndarray, *others: np.ndarray, eps: float = 1e-6):
    """Per-feature standardization with mean / std of train only; returns (train, *others)."""
    mean = x_train.mean(axis=0, keepdims=True)
    std = x_train.std(axis=0, keepdims=True) + eps
    return tuple(((x - mean) / std).astype(np.float32) for x in (x_train, *others))


def from_arrays(
    name: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_valid: np.ndarray,
    y_valid: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    num_classes: int,
    *,
    normalize: bool = True,
) -> ArrayDataset:
    """An ArrayDataset from numpy splits: standardizes x with train statistics, fingerprints all.

    Labels are cast to int32 for classification (`num_classes` > 0), else float32.
    """
    if normalize:
        x_train, x_valid, x_test = standardize(x_train, x_valid, x_test)
    label_dtype = np.int32 if num_classes > 0 else np.float32
    splits = [
        np.asarray(x_train, np.float32),
        np.asarray(y_train, label_dtype),
        np.asarray(x_valid, np.float32),
        np.asarray(y_valid, label_dtype),
        np.asarray(x_test, np.float32),
        np.asarray(y_test, label_dtype),
    ]
    digest = fingerprint(*splits, extra=f"{name}:{num_classes}")
    # Datasets are cached and may be first requested while a family builds a task inside jit:
    # the arrays must be concrete device arrays, never tracers of that trace.
    with jax.ensure_compile_time_eval():
        device_splits = [jnp.asarray(a) for a in splits]
    return ArrayDataset(name, *device_splits, num_classes, digest)


def from_single_pool(
    name: str, x: np.ndarray, y: np.ndarray, num_classes: int, *, valid: int, test: int
) -> ArrayDataset:
    """Cut one pool of examples into fixed disjoint splits (see `split_indices`)."""
    train_idx, valid_idx, test_idx = split_indices(len(x), valid, test)
    return from_arrays(
        name,
        x[train_idx], y[train_idx],
        x[valid_idx], y[valid_idx],
        x[test_idx], y[test_idx],
        num_classes,
    )  # fmt: skip


@functools.cache
def digits() -> ArrayDataset:
    """scikit-learn's bundled 8x8 digits: 1797 images, 10 classes, x as (N, 8, 8, 1).

    Splits: one permutation of the 1797 images with SPLIT_SEED; 300 test, 250 valid, 1247 train.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = bunch.images.astype(np.float32)[..., None] / 16.0
    return from_single_pool("digits", x, bunch.target, 10, valid=250, test=300)


@functools.cache
def mnist1d() -> ArrayDataset:
    """mnist1d generated procedurally (the package's default arguments, seed 42): x as (N, 40, 1).

    The generator's own 4000 / 1000 train / test split is kept; the last 500 of its train
    examples become valid. The generator standardizes with a global scalar mean / std over all
    5000 examples; that affine map is undone by our per-position train-only standardization,
    so no test statistics reach the features. Numpy's global RNG (which the generator seeds)
    is restored afterwards.
    """
    from mnist1d.data import get_dataset_args, make_dataset

    rng_state = np.random.get_state()
    try:
        raw = make_dataset(get_dataset_args())
    finally:
        np.random.set_state(rng_state)
    x, y = raw["x"].astype(np.float32)[..., None], raw["y"]
    return from_arrays(
        "mnist1d",
        x[:-500], y[:-500],
        x[-500:], y[-500:],
        raw["x_test"].astype(np.float32)[..., None], raw["y_test"],
        10,
    )  # fmt: skip


@functools.cache
def synthetic_regression(
    input_dim: int = 16, teacher_width: int = 32, noise_std: float = 0.1, seed: int = 0
) -> ArrayDataset:
    """Regression onto a random tanh teacher network: y = w2 . tanh(W1 x) + noise.

    x ~ N(0, I) of `input_dim`; 4096 / 512 / 512 train / valid / test examples drawn from numpy's
    generator with `seed`. Targets have shape (N, 1); the noiseless part is scaled to unit
    variance so that losses are comparable across seeds (predicting 0 scores about 1 + noise^2).
    """
    rng = np.random.default_rng(seed)
    n = 4096 + 512 + 512
    x = rng.normal(size=(n, input_dim)).astype(np.float32)
    w1 = rng.normal(size=(input_dim, teacher_width)) / np.sqrt(input_dim)
    w2 = rng.normal(size=(teacher_width, 1)) / np.sqrt(teacher_width)
    y = np.tanh(x @ w1) @ w2
    y = y / y.std() + noise_std * rng.normal(size=y.shape)
    return from_single_pool(
        f"synthetic_regression(d={input_dim},w={teacher_width},noise={noise_std},seed={seed})",
        x, y.astype(np.float32), 0, valid=512, test=512,
    )  # fmt: skip


@functools.cache
def synthetic_logistic(input_dim: int = 20, margin_scale: float = 3.0, seed: int = 0):
    """Binary labels from a logistic model: y ~ Bernoulli(sigmoid(margin_scale * x . w / |w|)).

    x ~ N(0, I) of `input_dim`; 2048 / 512 / 512 train / valid / test examples with `seed`.
    """
    rng = np.random.default_rng(seed)
    n = 2048 + 512 + 512
    x = rng.normal(size=(n, input_dim)).astype(np.float32)
    w = rng.normal(size=(input_dim,))
    logits = margin_scale * x @ (w / np.linalg.norm(w))
    y = (rng.uniform(size=n) < 1.0 / (1.0 + np.exp(-logits))).astype(np.int32)
    return from_single_pool(
        f"synthetic_logistic(d={input_dim},margin={margin_scale},seed={seed})",
        x, y, 2, valid=512, test=512,
    )  # fmt: skip


DATASETS = {"digits": digits, "mnist1d": mnist1d}


def get_dataset(name: str) -> ArrayDataset:
    """A named bundled/generated classification dataset; ValueError lists the valid names."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}")
    return DATASETS[name]()
