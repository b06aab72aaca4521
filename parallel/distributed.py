"""Multi-process runs: join a `jax.distributed` run, and read replicated results on any process.

Each process calls `initialize` once, before any other JAX call; after it `jax.devices()` lists
the devices of every process, so a mesh over `jax.devices()` spans them all and a jitted step
over it runs as one SPMD program whose collectives cross processes (gloo on CPU, NCCL on GPU,
ICI/DCN on TPU). No home-made networking: on a TPU pod slice or a SLURM GPU cluster
`initialize()` with no arguments discovers the coordinator itself.

    distributed.initialize("localhost:12345", num_processes=2, process_id=i,
                           local_device_count=4)            # CPU test: 2 x 4 devices
    mesh = parallel.mesh.make_mesh({"data": -1})             # over all 8 devices
    loss = jax.jit(step, ...)(...)                           # replicated over the mesh
    value = distributed.fetch_replicated(loss)               # same value on every process
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

CPU_COLLECTIVES = ("gloo", "mpi")


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, local_device_count: int | None = None,
               cpu_collectives: str = "gloo") -> None:
    """Join a multi-process JAX run (call first, in every process).

    Args:
      coordinator_address: "host:port" of process 0 (None: auto-detect on TPU / SLURM).
      num_processes, process_id: this run's size and this process's rank.
      local_device_count: simulated CPU devices of this process (CPU runs only).
      cpu_collectives: CPU cross-process collectives, "gloo" (or "mpi").
    """
    if cpu_collectives not in CPU_COLLECTIVES:
        raise ValueError(f"unknown cpu_collectives {cpu_collectives!r}; valid: gloo, mpi")
    jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    if local_device_count is not None:
        jax.config.update("jax_num_cpu_devices", int(local_device_count))
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id)


def fetch_replicated(tree: Any) -> Any:
    """Host numpy copies of replicated arrays (works when they span other processes too:
    each process reads its own first shard, which holds the whole value)."""
    return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), tree)
