"""parallel.distributed in one process: argument checks and reading replicated results.
(Two real processes on a localhost coordinator: tests/learned_opt/meta/test_multiprocess.py.)"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from parallel import distributed
from parallel import mesh as mesh_lib


def test_initialize_rejects_unknown_cpu_collectives_before_touching_jax():
    with pytest.raises(ValueError, match="unknown cpu_collectives 'nccl'; valid: gloo, mpi"):
        distributed.initialize("localhost:1", num_processes=2, process_id=0,
                               cpu_collectives="nccl")
    assert jax.config.jax_cpu_collectives_implementation != "nccl"


def test_fetch_replicated_returns_host_copies_of_a_replicated_tree():
    mesh = mesh_lib.make_mesh({"data": -1})
    tree = {"w": jnp.arange(6.0).reshape(2, 3), "step": jnp.int32(7)}
    on_mesh = jax.device_put(tree, mesh_lib.replicated(mesh))
    assert len(on_mesh["w"].sharding.device_set) == 8
    host = distributed.fetch_replicated(on_mesh)
    assert isinstance(host["w"], np.ndarray) and isinstance(host["step"], np.ndarray)
    np.testing.assert_array_equal(host["w"], np.arange(6.0).reshape(2, 3))
    assert host["step"].dtype == np.int32 and int(host["step"]) == 7
