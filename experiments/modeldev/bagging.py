"""Bagging: members trained on bootstrap resamples of the training split, in one vmapped program.

    train = members.make_member_trainer(task, lambda lr: optax.adam(lr), num_steps=400)
    bagged = train_bagging(task, train, jnp.float32(3e-3), num_members=5, seed=0)
    probs_MNC = members.member_outputs(task, bagged.params, "test")
    combine.average_probs(probs_MNC), combine.majority_vote(probs_MNC)

`bootstrap=False` gives the plain seed ensemble ("deep ensemble"): every member sees the whole
training split and members differ only in initialisation and batch order.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from experiments.modeldev import members as members_lib


class BaggedMembers(NamedTuple):
    """params: stacked member parameters (leading axis M); indices: (M, N) training rows each
    member sampled from (its bootstrap resample); seeds: the members' init / batch seeds."""

    params: Any
    indices: Any
    seeds: tuple[int, ...]


def train_bagging(task, trainer, tx_args, *, num_members: int, seed: int = 0,
                  bootstrap: bool = True) -> BaggedMembers:
    """Train `num_members` members with `trainer` (`members.make_member_trainer`) in one call.

    Args:
      task: the task the trainer was built for.
      trainer: `train(tx_args, keys_M, indices_MN)`.
      tx_args: the optimizer's arguments (e.g. its tuned learning rate), shared by members.
      num_members: M >= 2.
      seed: member m uses seed `seed + m`; the bootstrap draws use `seed` too.
      bootstrap: resample the train split with replacement per member (bagging); False: every
        member gets all rows.
    """
    if num_members < 2:
        raise ValueError(f"num_members must be >= 2 for an ensemble; got {num_members}")
    num_examples = members_lib.num_train(task)
    if bootstrap:
        key = jax.random.fold_in(jax.random.key(seed), 0x5EED)
        indices = members_lib.bootstrap_indices(key, num_examples, num_members)
    else:
        indices = jnp.tile(jnp.arange(num_examples), (num_members, 1))
    keys = members_lib.member_keys(seed, num_members)
    params = trainer(tx_args, keys, indices)
    return BaggedMembers(params, indices, tuple(range(seed, seed + num_members)))
