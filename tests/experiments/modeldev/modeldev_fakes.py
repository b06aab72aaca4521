"""Shared tiny pieces of the modeldev tests: one tiny task and trainers compiled once."""

import functools

import jax.numpy as jnp
import numpy as np
import optax

import models
from experiments.modeldev import members
from models.datasets import ArrayDataset
from models.nets import MLP, Functional
from models.tasks import SupervisedTask

NUM_STEPS = 30


@functools.cache
def tiny_task():
    return models.get_task("digits_mlp", hidden=(8,), batch_size=32)


@functools.cache
def adam_trainer():
    return members.make_member_trainer(tiny_task(), lambda lr: optax.adam(lr),
                                       num_steps=NUM_STEPS)


def id_task(num_train=40, num_classes=3):
    """A task whose input IS the row id of the train split (x = [id, 0]), to see which rows a
    batch came from."""
    ids = np.arange(num_train, dtype=np.float32)
    x = np.stack([ids, np.zeros_like(ids)], axis=1)
    y = (np.arange(num_train) % num_classes).astype(np.int32)
    data = ArrayDataset("ids", jnp.asarray(x), jnp.asarray(y), jnp.asarray(x[:6]),
                        jnp.asarray(y[:6]), jnp.asarray(x[:6]), jnp.asarray(y[:6]),
                        num_classes, "ids")
    net = Functional(lambda rngs: MLP(2, (4,), num_classes, rngs=rngs))
    return SupervisedTask("ids", net, data, batch_size=16)
