"""Device meshes with named axes (`data`, `model`, `stage`), one helper for all of parallel/.

JAX 0.10's `jax.make_mesh` defaults to Explicit axis types, under which every array carries
its sharding in its type and `jit` refuses implicit resharding. Most of this library writes
sharding with annotations (`NamedSharding`, `with_sharding_constraint`) and `shard_map`, which
is the Auto style, so `make_mesh` here defaults to Auto axes and lets a caller ask for
Explicit ones.

    mesh = make_mesh({"data": 4, "model": 2})
    x = jax.device_put(x, named(mesh, "data", None))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

DATA, MODEL, STAGE = "data", "model", "stage"


def make_mesh(
    axis_sizes: Mapping[str, int],
    *,
    devices: Sequence[jax.Device] | None = None,
    explicit: bool = False,
) -> Mesh:
    """A mesh whose named axes have the given sizes, in the order given.

    Args:
      axis_sizes: axis name -> size, e.g. `{"data": 2, "model": 2, "stage": 2}`. One size may
        be -1, meaning "all remaining devices".
      devices: devices to use (default: all of `jax.devices()`, across hosts in the order
        `jax.make_mesh` picks for the physical topology).
      explicit: Explicit axis types (sharding in types) instead of Auto.

    Returns:
      A `jax.sharding.Mesh`.

    Raises:
      ValueError: when the sizes do not multiply to the number of devices.
    """
    if not axis_sizes:
        raise ValueError("axis_sizes is empty; give at least one named axis, e.g. {'data': -1}")
    devices = list(jax.devices() if devices is None else devices)
    names = tuple(axis_sizes)
    sizes = [int(s) for s in axis_sizes.values()]
    if sizes.count(-1) > 1:
        raise ValueError(f"at most one axis size may be -1, got {dict(axis_sizes)}")
    known = int(np.prod([s for s in sizes if s != -1]))
    if any(s == 0 or s < -1 for s in sizes):
        raise ValueError(f"axis sizes must be positive (or one -1), got {dict(axis_sizes)}")
    if -1 in sizes:
        if len(devices) % known:
            raise ValueError(
                f"mesh axes {dict(axis_sizes)}: {len(devices)} devices are not divisible by {known}"
            )
        sizes[sizes.index(-1)] = len(devices) // known
    if int(np.prod(sizes)) != len(devices):
        raise ValueError(
            f"mesh axes {dict(zip(names, sizes, strict=True))} need {int(np.prod(sizes))} "
            f"devices, but {len(devices)} are available"
        )
    axis_type = AxisType.Explicit if explicit else AxisType.Auto
    return jax.make_mesh(
        tuple(sizes), names, axis_types=(axis_type,) * len(names), devices=devices
    )


def named(mesh: Mesh, *spec) -> NamedSharding:
    """`NamedSharding(mesh, PartitionSpec(*spec))`, the short way."""
    return NamedSharding(mesh, PartitionSpec(*spec))


def replicated(mesh: Mesh) -> NamedSharding:
    """A sharding that replicates an array on every device of `mesh`."""
    return NamedSharding(mesh, PartitionSpec())


def axis_size(mesh: Mesh, name: str) -> int:
    """Size of axis `name`, with a clear error when the mesh lacks it."""
    if name not in mesh.shape:
        raise ValueError(f"mesh has no axis {name!r}; its axes are {dict(mesh.shape)}")
    return int(mesh.shape[name])
