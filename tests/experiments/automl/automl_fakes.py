"""Small fakes for the automl tests: a logistic task whose test split raises, analytic spaces.

`TrapTask()` is binary logistic regression on fixed Gaussian data; asking it for any batch (or
the full split) of "test" raises, so a search that ran through it never read test.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

SPLIT_SIZES = {"train": 256, "valid": 128, "test": 128}


class TrapTask:
    """Logistic regression (8 features); reading "test" raises AssertionError."""

    name = "trap_logistic"

    def __init__(self, dim=8, batch_size=32):
        self.batch_size, self.dim = batch_size, dim
        rng = np.random.default_rng(0)
        true_w = rng.normal(size=dim)
        self.data = {}
        for split, size in SPLIT_SIZES.items():
            x = rng.normal(size=(size, dim)).astype(np.float32)
            y = (x @ true_w + 0.5 * rng.normal(size=size) > 0).astype(np.int32)
            self.data[split] = (jnp.asarray(x), jnp.asarray(y))
        self.requested_splits = set()

    def _check(self, split):
        self.requested_splits.add(split)
        if split == "test":
            raise AssertionError("the test split was read")

    def init(self, key):
        return {"w": 0.1 * jax.random.normal(key, (self.dim,)), "b": jnp.zeros(())}

    def sample_batch(self, key, split):
        self._check(split)
        x, y = self.data[split]
        index = jax.random.randint(key, (self.batch_size,), 0, x.shape[0])
        return x[index], y[index]

    def full_split(self, split):
        self._check(split)
        return self.data[split]

    def loss(self, params, batch):
        x, y = batch
        logits = x @ params["w"] + params["b"]
        return jnp.mean(jnp.logaddexp(0.0, logits) - y * logits)
