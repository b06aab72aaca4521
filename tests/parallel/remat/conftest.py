"""Shape-only deep-MLP fixtures shared by the memory and policy-choice tests (compiled once)."""

import jax
import jax.numpy as jnp
import pytest
from remat_problems import DEEP, WIDTH, init_mlp, mlp_loss

from parallel import remat


@pytest.fixture(scope="session")
def deep_mlp_args():
    """Shapes only: memory figures come from compilation, nothing runs."""
    params = jax.eval_shape(lambda: init_mlp(jax.random.key(0), DEEP, WIDTH))
    return params, jax.ShapeDtypeStruct((64, WIDTH), jnp.float32)


@pytest.fixture(scope="session")
def deep_mlp_stats(deep_mlp_args):
    return {p: remat.memory_stats(mlp_loss(p), *deep_mlp_args) for p in remat.DEFAULT_CANDIDATES}
