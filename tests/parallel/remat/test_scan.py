"""parallel.remat.scan: the sqrt(n) scan equals a plain scan and grows sub-linearly in memory."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from remat_problems import init_mlp, residual_layer

from parallel import remat


@pytest.mark.parametrize("depth,segment_length,inner_policy", [(10, 3, "none"), (9, None, "full")])
def test_sqrt_scan_matches_plain_scan(depth, segment_length, inner_policy):
    params = init_mlp(jax.random.key(4), depth, 8)
    x = jax.random.normal(jax.random.key(5), (4, 8))

    def loss(scan_fn, **kw):
        return lambda p, x: jnp.sum(jnp.sin(scan_fn(residual_layer, x, p, **kw)))

    ref = jax.jit(jax.value_and_grad(loss(remat.scan_layers), argnums=(0, 1)))(params, x)
    got = jax.jit(
        jax.value_and_grad(
            loss(remat.sqrt_scan, segment_length=segment_length, inner_policy=inner_policy),
            argnums=(0, 1),
        )
    )(params, x)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), got, ref)


def test_sqrt_scan_memory_grows_sublinearly():
    """Depth x4 -> no-remat temp memory ~x4, sqrt(n) scan memory clearly less."""

    def temp_bytes(scan_fn, depth):
        params = jax.eval_shape(lambda: init_mlp(jax.random.key(0), depth, 8))
        x = jax.ShapeDtypeStruct((128, 8), jnp.float32)
        loss = lambda p, x: jnp.mean(scan_fn(residual_layer, x, p) ** 2)
        return remat.compiled_memory(jax.value_and_grad(loss), params, x).temp_bytes

    plain = [temp_bytes(remat.scan_layers, d) for d in (16, 64)]
    nested = [temp_bytes(remat.sqrt_scan, d) for d in (16, 64)]
    assert plain[1] / plain[0] > 3.5, plain
    assert nested[1] / nested[0] < 2.5, nested
    assert nested[1] < plain[1] / 4, (nested, plain)


def test_sqrt_scan_bad_input():
    params = init_mlp(jax.random.key(0), 4, 8)
    with pytest.raises(ValueError, match="segment_length must be in"):
        remat.sqrt_scan(residual_layer, jnp.ones((2, 8)), params, segment_length=5)
    with pytest.raises(ValueError, match="same leading"):
        remat.sqrt_scan(residual_layer, jnp.ones((2, 8)), (params[0], params[1][:3]))


def test_default_segment_length_prefers_divisors_near_sqrt():
    assert [remat.default_segment_length(d) for d in (16, 32, 128, 256)] == [4, 8, 16, 16]
    assert remat.default_segment_length(7) == 3  # prime: round(sqrt), with a remainder segment
