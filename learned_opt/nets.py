"""Tiny networks shared by the architectures: per-parameter MLPs and their initialisers.

A per-parameter MLP sees one feature vector per parameter entry, `x` of shape (..., F), and
per-tensor features `z` of shape (G,). The per-tensor part of the first layer is folded into a
bias (`b + z @ W_z`, an (H,) vector), so per-tensor features cost nothing per parameter; the
per-entry part is one matmul, and the whole network touches each entry's features once.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def dense_init(key: jax.Array, fan_in: int, fan_out: int, scale: float = 1.0) -> jax.Array:
    """(fan_in, fan_out) float32 weights, normal with variance scale**2 / fan_in."""
    std = scale / max(fan_in, 1) ** 0.5
    return std * jax.random.normal(key, (fan_in, fan_out), jnp.float32)


def mlp_init(key: jax.Array, num_inputs: int, num_global: int, hidden_size: int,
             num_hidden_layers: int, num_outputs: int, out_scale: float = 1e-2) -> dict:
    """Weights of `mlp_apply`: `w_in` (F, H), `w_global` (G, H), `b_in`, hidden layers
    `w_h{i}`/`b_h{i}` (H, H), and a small output layer `w_out` (H, O) scaled by `out_scale`
    (so an untrained network adds little to the architecture's skip path), `b_out` zero."""
    keys = jax.random.split(key, num_hidden_layers + 2)
    theta = {
        "w_in": dense_init(keys[0], num_inputs, hidden_size),
        "w_global": dense_init(keys[1], num_global, hidden_size, scale=0.5),
        "b_in": jnp.zeros((hidden_size,), jnp.float32),
        "w_out": dense_init(keys[-1], hidden_size, num_outputs, scale=out_scale),
        "b_out": jnp.zeros((num_outputs,), jnp.float32),
    }
    for i in range(1, num_hidden_layers):
        theta[f"w_h{i}"] = dense_init(keys[1 + i], hidden_size, hidden_size)
        theta[f"b_h{i}"] = jnp.zeros((hidden_size,), jnp.float32)
    return theta


def mlp_apply(theta: dict, x: jax.Array, z: jax.Array, num_hidden_layers: int) -> jax.Array:
    """Per-entry MLP: (..., F) features and (G,) per-tensor features -> (..., O) outputs."""
    bias = theta["b_in"] + z @ theta["w_global"]
    h = jax.nn.relu(jnp.einsum("...f,fh->...h", x, theta["w_in"]) + bias)
    for i in range(1, num_hidden_layers):
        h = jax.nn.relu(jnp.einsum("...f,fh->...h", h, theta[f"w_h{i}"]) + theta[f"b_h{i}"])
    return jnp.einsum("...h,ho->...o", h, theta["w_out"]) + theta["b_out"]
