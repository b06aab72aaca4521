"""Small problems shared by the parallel.remat tests: a tagged residual MLP block, its stacked
params, and a scanned loss under a policy."""

import jax
import jax.numpy as jnp
import numpy as np
from jax.ad_checkpoint import checkpoint_name

from parallel import remat

WIDTH, DEPTH, BATCH = 16, 6, 8
DEEP = 16  # depth of the shape-only MLP whose memory is measured


def mlp_block(layer_params, x_BD):
    """Pre-norm residual MLP block with the tags the models place."""
    w_in, w_out = layer_params
    h = x_BD - jnp.mean(x_BD, axis=-1, keepdims=True)
    h = checkpoint_name(jnp.tanh(h @ w_in), "mlp_hidden")
    return x_BD + checkpoint_name(h @ w_out, "mlp_out")


def init_mlp(key, depth=DEPTH, width=WIDTH):
    k_in, k_out = jax.random.split(key)
    scale = 1.0 / np.sqrt(width)
    return (
        scale * jax.random.normal(k_in, (depth, width, 4 * width)),
        scale * jax.random.normal(k_out, (depth, 4 * width, width)),
    )


def mlp_loss(policy):
    block = remat.checkpoint(mlp_block, policy, prevent_cse=False)

    def loss(params, x_BD):
        def body(x, layer_params):
            return block(layer_params, x), None

        y, _ = jax.lax.scan(body, x_BD, params)
        return jnp.mean(y**2)

    return loss


def residual_layer(x, layer_params):
    return mlp_block(layer_params, x)
