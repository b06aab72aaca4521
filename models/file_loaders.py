"""Datasets from files the user brings: MNIST-style IDX files, `.npz` arrays, optional adapters.

    data = mnist_idx_dataset("/data/fashion_mnist")    # the four standard IDX files (.gz or not)
    data = npz_dataset("/data/my_arrays.npz")          # keys x_train, y_train, x_test, y_test
    task = SupervisedTask("my_mlp", net, data, batch_size=128)

Both carve a fixed valid split off train (`valid_size` examples, permutation seed
`datasets.SPLIT_SEED`), standardize with train statistics and fingerprint the result, like
every dataset in `models.datasets`. Errors name the path and say what was expected.

The tfds / Hugging Face adapters import their library only when called and raise a clear
ImportError when it is not installed; nothing here downloads unless such a library does.
"""

from __future__ import annotations

import gzip
import os

import numpy as np

from models.datasets import ArrayDataset, from_arrays, split_indices

# IDX type byte -> big-endian numpy dtype (the IDX format of LeCun's MNIST distribution).
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
MNIST_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


def read_idx(path: str) -> np.ndarray:
    """The array stored in an IDX file (optionally gzip-compressed).

    Raises:
      FileNotFoundError: `path` does not exist.
      ValueError: the header or size does not match the IDX format.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"IDX file not found: {path!r}")
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except OSError as err:
        raise ValueError(
            f"{path!r}: could not read as {'gzip ' if opener is gzip.open else ''}IDX file ({err})"
        ) from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise ValueError(
            f"{path!r} is not an IDX file: expected magic bytes 0x00 0x00 <type> <ndim> with type "
            f"in {[hex(t) for t in IDX_DTYPES]}, got {raw[:4].hex() or 'an empty file'}"
        )
    dtype, ndim = np.dtype(IDX_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path!r}: IDX header promises {ndim} dimensions but the file ends early")
    shape = tuple(int(d) for d in np.frombuffer(raw[4:header], dtype=">u4"))
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(
            f"{path!r}: IDX header says shape {shape} of {dtype} ({expected} bytes of data), "
            f"but the file holds {len(raw) - header} bytes after the header"
        )
    return np.frombuffer(raw[header:], dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def _find(directory: str, stem: str) -> str:
    for candidate in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem + ".idx"):
        path = os.path.join(directory, candidate)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(
        f"no {stem!r} (or {stem}.gz) in {directory!r}; expected the four MNIST IDX files "
        f"{sorted(MNIST_FILES.values())}"
    )


def _with_valid_split(name, x_train, y_train, x_test, y_test, num_classes, valid_size, path):
    for key, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        if len(x) != len(y):
            raise ValueError(f"{path!r}: {len(x)} {key} inputs but {len(y)} {key} labels")
    train_idx, valid_idx, _ = split_indices(len(x_train), valid_size, 0)
    return from_arrays(
        name,
        x_train[train_idx].astype(np.float32), y_train[train_idx],
        x_train[valid_idx].astype(np.float32), y_train[valid_idx],
        x_test.astype(np.float32), y_test,
        num_classes,
    )  # fmt: skip


def mnist_idx_dataset(directory: str, *, name: str = "mnist", valid_size: int = 5000):
    """MNIST or Fashion-MNIST from its four IDX files in `directory`; x (N, H, W, 1) in [0, 1]."""
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"MNIST directory not found: {directory!r}")
    arrays = {key: read_idx(_find(directory, stem)) for key, stem in MNIST_FILES.items()}
    for key in ("x_train", "x_test"):
        if arrays[key].ndim != 3:
            raise ValueError(
                f"{directory!r}: {key} should be (N, H, W) images; got shape {arrays[key].shape}"
            )
    x_train, x_test = (arrays[k][..., None] / 255.0 for k in ("x_train", "x_test"))
    num_classes = int(max(arrays["y_train"].max(), arrays["y_test"].max())) + 1
    return _with_valid_split(
        name,
        x_train,
        arrays["y_train"],
        x_test,
        arrays["y_test"],
        num_classes,
        valid_size,
        directory,
    )


NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def npz_dataset(
    path: str,
    *,
    name: str | None = None,
    valid_size: int | None = None,
    num_classes: int | None = None,
) -> ArrayDataset:
    """A dataset from an `.npz` with arrays x_train, y_train, x_test, y_test (and optionally
    x_valid, y_valid; else `valid_size` examples, default 10% of train, are held out of train).

    Integer y means classification (classes = max label + 1 unless `num_classes` is given);
    float y means regression.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f".npz file not found: {path!r}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError) as err:
        raise ValueError(f"{path!r} is not a readable .npz archive ({err})") from err
    missing = [key for key in NPZ_KEYS if key not in arrays]
    if missing:
        raise ValueError(
            f"{path!r} lacks arrays {missing}; expected keys {list(NPZ_KEYS)} "
            f"(optionally x_valid, y_valid); found {sorted(arrays)}"
        )
    name = name or os.path.splitext(os.path.basename(path))[0]
    y_train = arrays["y_train"]
    if np.issubdtype(y_train.dtype, np.integer):
        classes = num_classes or int(max(y_train.max(), arrays["y_test"].max())) + 1
    else:
        classes = 0
    if "x_valid" in arrays and "y_valid" in arrays:
        return from_arrays(
            name,
            arrays["x_train"],
            y_train,
            arrays["x_valid"],
            arrays["y_valid"],
            arrays["x_test"],
            arrays["y_test"],
            classes,
        )
    valid_size = len(y_train) // 10 if valid_size is None else valid_size
    return _with_valid_split(
        name,
        arrays["x_train"],
        y_train,
        arrays["x_test"],
        arrays["y_test"],
        classes,
        valid_size,
        path,
    )


def tfds_dataset(name: str, *, valid_size: int = 5000, data_dir: str | None = None):
    """An image-classification dataset through tensorflow_datasets (only if installed).

    tfds reads prepared data from `data_dir`; whether it downloads is tfds's own setting.
    """
    try:
        import tensorflow_datasets as tfds
    except ImportError as err:
        raise ImportError(
            "tfds_dataset needs tensorflow_datasets: pip install "
            "tensorflow-datasets (not a dependency of learned-opt)"
        ) from err
    train, test = tfds.as_numpy(
        tfds.load(name, split=["train", "test"], batch_size=-1, data_dir=data_dir)
    )
    num_classes = int(max(train["label"].max(), test["label"].max())) + 1
    return _with_valid_split(
        name,
        train["image"] / 255.0,
        train["label"],
        test["image"] / 255.0,
        test["label"],
        num_classes,
        valid_size,
        name,
    )


def huggingface_dataset(
    name: str, *, image_key: str = "image", label_key: str = "label", valid_size: int = 5000
):
    """An image-classification dataset through Hugging Face `datasets` (only if installed)."""
    try:
        import datasets as hf_datasets
    except ImportError as err:
        raise ImportError(
            "huggingface_dataset needs the `datasets` package: pip install "
            "datasets (not a dependency of learned-opt)"
        ) from err
    loaded = hf_datasets.load_dataset(name).with_format("numpy")
    train, test = loaded["train"], loaded["test"]
    x_train, x_test = (np.asarray(s[image_key], np.float32) / 255.0 for s in (train, test))
    y_train, y_test = np.asarray(train[label_key]), np.asarray(test[label_key])
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    return _with_valid_split(name, x_train, y_train, x_test, y_test, num_classes, valid_size, name)
