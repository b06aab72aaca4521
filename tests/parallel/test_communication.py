"""The HLO collective counter on programs whose communication is known by construction."""

import jax
import jax.numpy as jnp
import pytest
from jax.sharding import PartitionSpec as P

from parallel import communication
from parallel import mesh as mesh_lib


def test_counts_each_collective_with_its_operand_bytes():
    mesh = mesh_lib.make_mesh({"data": 8})
    ring = [(i, (i + 1) % 8) for i in range(8)]

    def per_shard(x):  # x: the local f32[8, 3] block of a f32[64, 3] array
        return (
            jax.lax.psum(x, "data"),
            jax.lax.all_gather(x, "data"),
            jax.lax.psum_scatter(x, "data", tiled=True),
            jax.lax.ppermute(x, "data", ring),
        )

    fn = jax.jit(jax.shard_map(per_shard, mesh=mesh, in_specs=P("data"),
                               out_specs=(P(), P(), P("data"), P("data")), check_vma=False))
    stats = communication.communication_of(fn, jnp.ones((64, 3), jnp.float32))
    local_bytes = 8 * 3 * 4  # every collective takes the 96-byte local block as its operand
    for op in ("all-reduce", "all-gather", "reduce-scatter", "collective-permute"):
        assert stats.by_op[op] == communication.OpStats(1, local_bytes, local_bytes), op
    assert stats.total_bytes == 4 * local_bytes
    assert stats.as_dict()["total_count"] == 4


def test_parses_tuple_shapes_iota_groups_and_async_starts():
    hlo = "\n".join([
        "HloModule m, num_partitions=8",
        "  %a = (f32[16]{0}, bf16[4,16]{1,0}) all-reduce(%x, %y), replica_groups=[2,4]<=[8]",
        "  %g = f32[4,6]{1,0} all-gather(%z), replica_groups=[2,4]<=[8], dimensions={0}",
        "  %s = ((f32[2]{0}), f32[16]{0}) all-gather-start(%w), replica_groups={}",
        "  %d = f32[16]{0} all-gather-done(%s)",
        "  ROOT %r = s32[2]{0} reduce-scatter(%v), replica_groups={{0,1},{2,3}}",
    ])
    stats = communication.collective_stats(hlo)
    assert stats.by_op["all-reduce"] == communication.OpStats(1, 16 * 4 + 64 * 2, 16 * 4 + 64 * 2)
    # 4x6 gathered over groups of 4 -> 6 floats in; the async start counts its operand (2 f32).
    assert stats.by_op["all-gather"] == communication.OpStats(2, 6 * 4 + 2 * 4, 6 * 4)
    assert stats.by_op["reduce-scatter"] == communication.OpStats(1, 2 * 4 * 2, 2 * 4 * 2)


def test_no_collectives_on_one_device_and_unknown_dtype_is_an_error():
    stats = communication.communication_of(lambda x: x * 2, jnp.ones(3))
    assert stats.total_bytes == 0 and stats.total_count == 0
    # A psum over a size-1 axis of a 2-D mesh moves nothing, whatever XLA prints for it.
    mesh = mesh_lib.make_mesh({"data": 8, "model": 1})
    fn = jax.jit(jax.shard_map(lambda x: jax.lax.psum(x, "model"), mesh=mesh,
                               in_specs=P("data"), out_specs=P("data")))
    assert communication.communication_of(fn, jnp.ones((8, 3))).total_bytes == 0
    with pytest.raises(ValueError, match="unknown HLO dtype 'q7'"):
        communication.array_bytes("q7[3]")
