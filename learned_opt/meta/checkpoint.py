"""Resumable meta-training: the whole `MetaTrainState` saved with orbax every N steps.

Saved: theta, outer optimizer state, per-task estimator state (PES accumulators), the task
population (params, inner optimizer states, steps, horizons, keys) and the counters. Orbax
writes each step to a temporary directory and renames it when complete, so a run killed at any
moment (kill -9) leaves only whole checkpoints; on CPU the resumed run ends with exactly the
theta of an uninterrupted run.

The run's *fingerprint* (the config entries that fix what the state means: architecture,
family, estimator, population size, ...) is stored beside the checkpoints; resuming under a
different fingerprint refuses and names every entry that differs.

    ckpt = MetaCheckpointer(workdir / "checkpoints", fingerprint={"lopt": ..., "num_tasks": 8})
    if ckpt.latest_step() is not None:
        state = ckpt.restore(trainer.abstract_state(theta))
    ckpt.save(state)                     # at state.step
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

PyTree = Any
FINGERPRINT_FILE = "fingerprint.json"


def _is_key(x) -> bool:
    return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def keys_to_data(tree: PyTree) -> PyTree:
    """Typed PRNG keys -> their raw uint32 data (what orbax can store)."""
    return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)


def data_to_keys(tree: PyTree, like: PyTree) -> PyTree:
    """Inverse of `keys_to_data`, using `like` to know which leaves were keys.

    Keys come back with the default PRNG implementation, the one `jax.random.key` uses.
    """
    return jax.tree.map(lambda x, ref: jax.random.wrap_key_data(x) if _is_key(ref) else x,
                        tree, like)


def _abstract_data(abstract: PyTree) -> PyTree:
    """ShapeDtypeStructs of the key-data form of an abstract state (keeping shardings)."""
    def convert(x):
        if not _is_key(x):
            return x
        data = jax.eval_shape(jax.random.key_data, x)
        sharding = getattr(x, "sharding", None)
        return jax.ShapeDtypeStruct(data.shape, data.dtype, sharding=sharding)
    return jax.tree.map(convert, abstract)


class MetaCheckpointer:
    """Orbax `CheckpointManager` for `MetaTrainState`s, guarded by a config fingerprint."""

    def __init__(self, directory: str | os.PathLike, fingerprint: dict, max_to_keep: int = 2):
        self.directory = os.path.abspath(os.fspath(directory))
        self.fingerprint = json.loads(json.dumps(fingerprint, sort_keys=True, default=str))
        os.makedirs(self.directory, exist_ok=True)
        # Synchronous saves: the trainer donates its state buffers to the next step.
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep,
                                               enable_async_checkpointing=False)
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def check_compatible(self) -> None:
        """Raise a ValueError when the checkpoints here come from an incompatible config."""
        path = os.path.join(self.directory, FINGERPRINT_FILE)
        if not os.path.exists(path):
            if self.latest_step() is not None:
                raise ValueError(f"{self.directory} holds checkpoints without {FINGERPRINT_FILE};"
                                 " refusing to resume a run of unknown configuration")
            return
        with open(path) as f:
            saved = json.load(f)
        differ = sorted(k for k in set(saved) | set(self.fingerprint)
                        if saved.get(k) != self.fingerprint.get(k))
        if differ:
            lines = [f"  {k}: checkpoint has {saved.get(k)!r}, this config has "
                     f"{self.fingerprint.get(k)!r}" for k in differ]
            raise ValueError(
                f"cannot resume from {self.directory}: it was written by an incompatible "
                f"config:\n" + "\n".join(lines) +
                "\nUse a new workdir, or set these entries back to the checkpoint's values.")

    def save(self, state, *, force: bool = False) -> None:
        """Save `state` at its own step (a no-op if that step is already saved)."""
        step = int(jax.device_get(state.step))
        if step in self.manager.all_steps():
            return
        self.check_compatible()
        path = os.path.join(self.directory, FINGERPRINT_FILE)
        if jax.process_index() == 0 and not os.path.exists(path):
            with open(path, "w") as f:
                json.dump(self.fingerprint, f, indent=1, sort_keys=True)
        self.manager.save(step, args=ocp.args.StandardSave(keys_to_data(state)), force=force)
        self.manager.wait_until_finished()

    def restore(self, abstract_state, step: int | None = None):
        """The saved state at `step` (default: latest), laid out like `abstract_state`.

        `abstract_state` is a tree of `jax.ShapeDtypeStruct` with shardings (see
        `MetaTrainer.abstract_state`).
        """
        self.check_compatible()
        step = self.latest_step() if step is None else step
        if step is None:
            raise ValueError(f"no checkpoint to restore in {self.directory}")
        restored = self.manager.restore(
            step, args=ocp.args.StandardRestore(_abstract_data(abstract_state)))
        return data_to_keys(restored, abstract_state)

    def close(self) -> None:
        self.manager.close()
