"""The task population sharded over a device mesh: every device unrolls its slice of tasks.

The population's leading (task) axis is split over the mesh axis `data`; theta and the outer
optimizer state are replicated. Each device vmaps its tasks, sums their meta-gradient
contributions, and one `psum` over the axis gives the population mean everywhere. Because all
per-task randomness comes from the task's own keys, 8 devices compute the same meta-gradient
as 1 device (up to float summation order), and with `jax.distributed.initialize` the mesh can
span processes and hosts unchanged.

    mesh = population_mesh()                   # all devices (all processes) on axis "data"
    grad_fn = sharded_meta_grad(estimator, unroller, mesh, num_tasks)
    grad, est_state, population, metrics = jax.jit(grad_fn)(theta, est_state, population)
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from learned_opt.meta.aggregation import as_mixture, finalize_metrics, population_task_grads
from parallel import mesh as mesh_lib

AXIS = mesh_lib.DATA


def population_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-axis mesh (`data`) over `devices` (default: every device of every process)."""
    return mesh_lib.make_mesh({AXIS: -1}, devices=devices)


def check_divisible(num_tasks: int, mesh: Mesh) -> None:
    """Raise a ValueError unless the population splits evenly over the mesh."""
    size = mesh_lib.axis_size(mesh, AXIS)
    if num_tasks % size:
        raise ValueError(f"num_tasks={num_tasks} does not split over the {size} devices of the "
                         f"mesh; use a multiple of {size}")


def population_sharding(mesh: Mesh):
    """Sharding of every population / estimator-state leaf: task axis over `data`."""
    return mesh_lib.named(mesh, AXIS)


def sharded_meta_grad(estimator, unroller, mesh: Mesh, num_tasks: int):
    """`(theta, est_state, population) -> (grad, est_state, population, metrics)` over `mesh`.

    Same contract as `aggregation.meta_grad`; grad and metrics come back replicated. For a
    mixture (`unroller` an `aggregation.Mixture`, or a tuple of unrollers; one sub-population
    per group), `num_tasks` is the total over the groups, and every sub-population is split
    over the devices on its own.
    """
    check_divisible(num_tasks, mesh)
    unroller = as_mixture(unroller)

    def per_device(theta, est_state, population):
        grad_sum, est_state, population, sums = population_task_grads(
            estimator, unroller, theta, est_state, population)
        grad_sum, sums = jax.lax.psum((grad_sum, sums), AXIS)
        grad = jax.tree.map(lambda g: g / num_tasks, grad_sum)
        return grad, est_state, population, finalize_metrics(sums, num_tasks)

    # check_vma=False: theta is replicated, and the psum above is the only cross-device
    # reduction we want (no implicit one from differentiating a replicated input).
    return jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P(AXIS), P(AXIS)),
                         out_specs=(P(), P(AXIS), P(AXIS), P()), check_vma=False)
