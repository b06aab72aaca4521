"""A tiny logistic-regression task for the benchmark / tuning tests, with a split trap.

`FakeTask(forbidden_splits=("test",))` raises at trace time if any code asks it for a batch of a
forbidden split, and `task.requested_splits` records every split that was asked for.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

SPLIT_SIZES = {"train": 256, "valid": 128, "test": 128}


class FakeTask:
    """Binary logistic regression on fixed Gaussian data (8 features)."""

    def __init__(self, name="fake_logistic", dim=8, batch_size=32, forbidden_splits=()):
        self.name = name
        self.batch_size = batch_size
        self.forbidden_splits = tuple(forbidden_splits)
        self.requested_splits = []
        rng = np.random.default_rng(0)
        true_w = rng.normal(size=dim)
        self.data = {}
        for split, size in SPLIT_SIZES.items():
            x = rng.normal(size=(size, dim)).astype(np.float32)
            y = (x @ true_w + 0.5 * rng.normal(size=size) > 0).astype(np.int32)
            self.data[split] = (jnp.asarray(x), jnp.asarray(y))
        self.dim = dim

    def init(self, key):
        return {"w": 0.1 * jax.random.normal(key, (self.dim,)), "b": jnp.zeros(())}

    def sample_batch(self, key, split):
        self.requested_splits.append(split)
        if split in self.forbidden_splits:
            raise AssertionError(f"split {split!r} was read")
        x, y = self.data[split]
        index = jax.random.randint(key, (self.batch_size,), 0, x.shape[0])
        return x[index], y[index]

    def _logits(self, params, x):
        return x @ params["w"] + params["b"]

    def loss(self, params, batch):
        x, y = batch
        logits = self._logits(params, x)
        return jnp.mean(jnp.logaddexp(0.0, logits) - y * logits)

    def metrics(self, params, batch):
        x, y = batch
        accuracy = jnp.mean((self._logits(params, x) > 0).astype(jnp.int32) == y)
        return {"loss": self.loss(params, batch), "accuracy": accuracy}

    def dataset_info(self):
        labels = np.asarray(self.data["test"][1])
        majority = max(labels.mean(), 1 - labels.mean())
        return {"name": "fake_gaussian", "split_sizes": SPLIT_SIZES, "fingerprint": "fake0",
                "random_guess_accuracy": 0.5, "zero_rule_accuracy": float(majority)}

    def full_split(self, split):
        self.requested_splits.append(split)
        if split in self.forbidden_splits:
            raise AssertionError(f"split {split!r} was read")
        return self.data[split]


class TwoTargetTask:
    """A scalar w pulled to 1 by the training loss and scored at 0.3 on valid / test.

    loss = mean((w - target)^2) with target 1 on "train", 0.3 on "valid" and "test": the more a
    run minimises the training loss, the worse its validation loss once w passes 0.3, so the
    train-optimal and valid-optimal learning rates of a fixed step budget differ.
    """

    name = "two_target"
    TARGETS = {"train": 1.0, "valid": 0.3, "test": 0.3}

    def __init__(self, forbidden_splits=()):
        self.forbidden_splits = tuple(forbidden_splits)
        self.requested_splits = []

    def init(self, key):
        return {"w": 1e-4 * jax.random.normal(key, ())}

    def sample_batch(self, key, split):
        self.requested_splits.append(split)
        if split in self.forbidden_splits:
            raise AssertionError(f"split {split!r} was read")
        return jnp.full((4,), self.TARGETS[split])

    def loss(self, params, batch):
        return jnp.mean((params["w"] - batch) ** 2)

    def full_split(self, split):
        return self.sample_batch(None, split)


def fixed_learned_spec(label="fixed_sgd", learning_rate=None, fixed_rate=0.02):
    """A stand-in learned optimizer (plain SGD): with `learning_rate` it takes one (default
    `learning_rate`, tunable); without, it runs at `fixed_rate` and cannot be tuned."""
    import optax

    from experiments.benchmarking.suite import LearnedSpec

    def make_tx(args):
        return optax.sgd(args.get("learning_rate", fixed_rate))

    args = {"theta": {"unused": jnp.zeros(())}}
    if learning_rate is not None:
        args["learning_rate"] = jnp.float32(learning_rate)
    return LearnedSpec(label, "checkpoint", make_tx, args, ("fake_family",), f"{label} (fake)",
                       {}, learning_rate, ("fake", label))
