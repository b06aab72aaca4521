"""Supervised tasks on device-resident datasets: classification, regression, language modelling.

A task bundles a network (`models.nets.Functional` or anything with `init` / `apply`), a
dataset and a batch size. Batches are drawn with `jax.random` inside jit from arrays captured
in the task, so a training loop never leaves the device:

    task = SupervisedTask("digits_mlp", net, datasets.digits(), batch_size=128)
    params = task.init(jax.random.key(0))
    batch = task.sample_batch(jax.random.key(1), "train")   # {"x": (128, 8, 8, 1), "y": (128,)}
    loss = task.loss(params, batch)

The dynamic knobs of task families (init scale, label noise, the subset of train used) are
plain constructor arguments and may be traced arrays, so one task object can be built inside
`jax.vmap` per member of a population.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
import optax

from learned_opt.tasks import check_split
from models.datasets import ArrayDataset
from models.nets import scale_params

LossKind = Literal["softmax", "sigmoid", "mse"]
LOSS_KINDS = ("softmax", "sigmoid", "mse")


def _check_batch_size(batch_size: int) -> int:
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int; got {batch_size!r}")
    return batch_size


class SupervisedTask:
    """Mean loss of a network on (x, y) batches sampled from an ArrayDataset.

    Args:
      name: task name (for logs and registries).
      net: object with `init(key) -> params` and `apply(params, x) -> outputs`.
      data: the dataset; its splits are captured as device arrays.
      batch_size: examples per batch (static).
      loss_kind: "softmax" (integer labels, logits (B, C)), "sigmoid" (binary labels,
        logits (B, 1)) or "mse" (targets (B, T)).
      init_scale: every initial parameter is multiplied by this (array or float).
      label_noise: probability that a train label is replaced by a uniformly random class;
        which labels flip is fixed per task by `noise_key` (classification only).
      data_fraction: fraction of the train split this task samples from, a random subset
        fixed by `subset_key`.
      noise_key, subset_key: typed keys for the two knobs above (default: key 0).
      label_draws, train_order: the random draws those keys give (`label_noise_draws`,
        `subset_order`), drawn once by a task family's `sample_task_params` so that a task
        rebuilt at every meta-training step does not redraw them (the permutation costs more
        than the task's own inner steps). When given, `noise_key` / `subset_key` are not used
        and the task is the same; `label_noise` and `data_fraction` stay live knobs.
    """

    def __init__(
        self,
        name: str,
        net,
        data: ArrayDataset,
        batch_size: int,
        *,
        loss_kind: LossKind = "softmax",
        init_scale: jax.Array | float = 1.0,
        label_noise: jax.Array | float = 0.0,
        data_fraction: jax.Array | float = 1.0,
        noise_key: jax.Array | None = None,
        subset_key: jax.Array | None = None,
        label_draws: dict | None = None,
        train_order: jax.Array | None = None,
    ):
        if loss_kind not in LOSS_KINDS:
            raise ValueError(f"unknown loss_kind {loss_kind!r}; expected one of {LOSS_KINDS}")
        if loss_kind == "mse" and data.num_classes > 0:
            raise ValueError(f"loss_kind 'mse' needs a regression dataset; {data.name} has classes")
        if loss_kind != "mse" and data.num_classes == 0:
            raise ValueError(f"loss_kind {loss_kind!r} needs class labels; {data.name} has none")
        self.name = name
        self.net = net
        self.data = data
        self.batch_size = _check_batch_size(batch_size)
        self.loss_kind = loss_kind
        self.init_scale = init_scale
        num_train = data.x_train.shape[0]
        noise_key = jax.random.key(0) if noise_key is None else noise_key
        subset_key = jax.random.key(0) if subset_key is None else subset_key
        self._train_labels = data.y_train
        if loss_kind != "mse" and not _is_zero(label_noise):
            if label_draws is None:
                label_draws = label_noise_draws(noise_key, data)
            for name, value in label_draws.items():
                _check_train_array(f"label_draws[{name!r}]", value, num_train)
            self._train_labels = jnp.where(label_draws["flip_uniform"] < label_noise,
                                           label_draws["random_label"], data.y_train)
        self._train_order = None
        self._num_train_used = num_train
        if not _is_one(data_fraction):
            self._train_order = (subset_order(subset_key, num_train) if train_order is None
                                 else _check_train_array("train_order", train_order, num_train))
            used = jnp.round(jnp.asarray(data_fraction) * num_train).astype(jnp.int32)
            self._num_train_used = jnp.clip(used, 1, num_train)

    def init(self, key: jax.Array):
        """Initial parameters: the network's init, times `init_scale`."""
        params = self.net.init(key)
        return params if _is_one(self.init_scale) else scale_params(params, self.init_scale)

    def sample_batch(self, key: jax.Array, split: str = "train") -> dict:
        """{"x", "y"} of `batch_size` examples drawn uniformly with replacement from `split`."""
        check_split(split)
        x, y = self.data.split(split)
        if split == "train":
            y = self._train_labels
            idx = jax.random.randint(key, (self.batch_size,), 0, self._num_train_used)
            if self._train_order is not None:
                idx = self._train_order[idx]
        else:
            idx = jax.random.randint(key, (self.batch_size,), 0, x.shape[0])
        return {"x": x[idx], "y": y[idx]}

    def full_split(self, split: str) -> dict:
        """All examples of `split` as one batch (for final evaluation of small datasets)."""
        x, y = self.data.split(split)
        return {"x": x, "y": y}

    def loss(self, params, batch: dict) -> jax.Array:
        """Scalar mean loss on `batch`."""
        return _mean_loss(self.loss_kind, self.net.apply(params, batch["x"]), batch["y"])

    def metrics(self, params, batch: dict) -> dict:
        """{"loss"} and, for classification, {"accuracy"} on `batch`."""
        outputs = self.net.apply(params, batch["x"])
        metrics = {"loss": _mean_loss(self.loss_kind, outputs, batch["y"])}
        if self.loss_kind == "softmax":
            metrics["accuracy"] = jnp.mean(jnp.argmax(outputs, axis=-1) == batch["y"])
        elif self.loss_kind == "sigmoid":
            metrics["accuracy"] = jnp.mean((outputs[:, 0] > 0) == (batch["y"] > 0))
        return metrics

    def dataset_info(self) -> dict:
        """JSON-able dataset description (name, split sizes, fingerprint, baselines)."""
        return self.data.info()

    def __repr__(self) -> str:
        return f"SupervisedTask({self.name!r}, data={self.data.name!r}, batch={self.batch_size})"


def label_noise_draws(noise_key: jax.Array, data: ArrayDataset) -> dict:
    """The draws behind a task's label noise, fixed by `noise_key`: per train example a
    uniform `flip_uniform` (its label is replaced when below `label_noise`) and the uniformly
    random class `random_label` it is replaced by (what `SupervisedTask` uses)."""
    num_train = data.x_train.shape[0]
    flip_key, class_key = jax.random.split(noise_key)
    return {"flip_uniform": jax.random.uniform(flip_key, (num_train,)),
            "random_label": jax.random.randint(class_key, (num_train,), 0, data.num_classes)}


def subset_order(subset_key: jax.Array, num_train: int) -> jax.Array:
    """The order of the train examples whose first `data_fraction` share is a task's data
    subset (what `SupervisedTask` uses)."""
    return jax.random.permutation(subset_key, num_train)


def _check_train_array(name: str, value: jax.Array, num_train: int) -> jax.Array:
    if jnp.shape(value) != (num_train,):
        raise ValueError(f"{name} must have shape ({num_train},) (one entry per train "
                         f"example); got {jnp.shape(value)}")
    return value


def _mean_loss(kind: str, outputs: jax.Array, targets: jax.Array) -> jax.Array:
    if kind == "softmax":
        return optax.softmax_cross_entropy_with_integer_labels(outputs, targets).mean()
    if kind == "sigmoid":
        labels = targets.astype(outputs.dtype)
        return optax.sigmoid_binary_cross_entropy(outputs[:, 0], labels).mean()
    return jnp.mean(jnp.sum((outputs - targets) ** 2, axis=-1))


def _is_zero(value) -> bool:
    return isinstance(value, (int, float)) and value == 0


def _is_one(value) -> bool:
    return isinstance(value, (int, float)) and value == 1


class LanguageModelTask:
    """Next-token cross-entropy of a causal LM on random windows of a token stream.

    Args:
      name: task name.
      net: object with `init(key)` and `apply(params, tokens_BL) -> logits_BLV`.
      corpus: object with `tokens(split) -> int32 array`, `vocab_size`, `info()`
        (see `models.text_corpus.CharCorpus`).
      seq_len: tokens per training window (the model sees seq_len, predicts the next ones).
      batch_size: windows per batch.
    """

    def __init__(self, name: str, net, corpus, seq_len: int, batch_size: int):
        self.name = name
        self.net = net
        self.corpus = corpus
        self.seq_len = int(seq_len)
        self.batch_size = _check_batch_size(batch_size)
        self._streams = {s: corpus.tokens(s) for s in ("train", "valid", "test")}
        for split, stream in self._streams.items():
            if stream.shape[0] <= self.seq_len + 1:
                raise ValueError(
                    f"corpus split {split!r} has {stream.shape[0]} tokens; need more than "
                    f"seq_len + 1 = {self.seq_len + 1}"
                )

    def init(self, key: jax.Array):
        """Initial parameters of the language model."""
        return self.net.init(key)

    def sample_batch(self, key: jax.Array, split: str = "train") -> dict:
        """{"tokens": int32 (batch_size, seq_len + 1)} windows starting at random offsets."""
        check_split(split)
        stream = self._streams[split]
        starts = jax.random.randint(key, (self.batch_size,), 0, stream.shape[0] - self.seq_len)
        offsets = jnp.arange(self.seq_len + 1)
        return {"tokens": stream[starts[:, None] + offsets[None, :]]}

    def loss(self, params, batch: dict) -> jax.Array:
        """Mean next-token cross-entropy (nats per character)."""
        return self.metrics(params, batch)["loss"]

    def metrics(self, params, batch: dict) -> dict:
        """{"loss", "accuracy"} of next-token prediction on `batch`."""
        tokens = batch["tokens"]
        logits = self.net.apply(params, tokens[:, :-1])
        targets = tokens[:, 1:]
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()
        accuracy = jnp.mean(jnp.argmax(logits, axis=-1) == targets)
        return {"loss": loss, "accuracy": accuracy}

    def dataset_info(self) -> dict:
        """JSON-able corpus description (files, sizes, fingerprint, baselines)."""
        return self.corpus.info()

    def __repr__(self) -> str:
        return f"LanguageModelTask({self.name!r}, seq_len={self.seq_len}, batch={self.batch_size})"
