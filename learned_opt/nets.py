"""The per-parameter network shared by the MLP architectures, written for speed on CPU.

A per-parameter MLP sees F features per parameter entry (a list of F arrays shaped like the
parameter) and G per-tensor features `z` (a (G,) vector). The per-tensor part of the first
layer is folded into its bias (`b_in + z @ w_global`, an (H,) vector), so per-tensor features
cost nothing per entry.

Why unrolled elementwise arithmetic and not a matmul: with F and H this small, XLA's CPU dot of
an (N, F) by (F, H) array runs at ~1 GFLOP/s (measured on the 2-core dev box: a 1M x 6 @ 6 x 32
dot took ~300 ms, while the whole unrolled network took ~40 ms), and it must write and re-read
the (N, H) hidden activations. Written as H * F scalar-times-array multiply-adds, the whole
network, its feature computation and the state update become one XLA loop fusion: each entry's
inputs are read once, nothing of size N x H ever exists, and under sharding it stays local.
The forward graph has O(F * H) nodes per tensor, so keep H <= 32.

The backward pass (meta-gradients, e.g. TBPTT) is written by hand in closed form, with the
entries on the trailing axis: stack the inputs to X (F, N) and the output cotangents to C
(O, N), recompute pre = w_in^T X + bias (H, N), then dpre = (w_out C) * (pre > 0) and

    dw_in = X dpre^T,  dbias = sum_n dpre,  dw_out = relu(pre) C^T,  db_out = sum_n C,
    dX = w_in dpre.

That is 5 contractions and a few loop fusions per tensor; under differentiation the forward
pass is two contractions as well (`_mlp_fwd`: its outputs then have many consumers).

The VJP that JAX derives (of the unrolled graph: O(F * H) full-size reductions, minutes to
compile; or of a broadcast form with H on the trailing axis) reduces over that short trailing
axis instead, which XLA's CPU backend runs ~10x slower (measured: TBPTT through MLPLOpt on the
regression-MLP setup of experiments/bench_meta.py spent most of its outer step in those
reductions). The contractions use HIGHEST precision so meta-gradients stay float32-exact on
accelerators too.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp


def dense_init(key: jax.Array, fan_in: int, fan_out: int, scale: float = 1.0) -> jax.Array:
    """(fan_in, fan_out) float32 weights, normal with variance scale**2 / fan_in."""
    std = scale / max(fan_in, 1) ** 0.5
    return std * jax.random.normal(key, (fan_in, fan_out), jnp.float32)


def mlp_init(key: jax.Array, num_inputs: int, num_global: int, hidden_size: int,
             num_outputs: int, out_scale: float = 1e-2) -> dict:
    """Weights of `mlp_apply`: `w_in` (F, H), `w_global` (G, H), `b_in` (H,), and a small
    output layer `w_out` (H, O) scaled by `out_scale` (so an untrained network adds little to
    the architecture's skip path), `b_out` (O,) zero."""
    k_in, k_global, k_out = jax.random.split(key, 3)
    return {
        "w_in": dense_init(k_in, num_inputs, hidden_size),
        "w_global": dense_init(k_global, num_global, hidden_size, scale=0.5),
        "b_in": jnp.zeros((hidden_size,), jnp.float32),
        "w_out": dense_init(k_out, hidden_size, num_outputs, scale=out_scale),
        "b_out": jnp.zeros((num_outputs,), jnp.float32),
    }


def _mlp_unrolled(w_in, bias, w_out, b_out, xs):
    """Forward pass as H * F scalar-times-array multiply-adds: one fused loop (fast on CPU)."""
    hidden_size, num_outputs = w_out.shape
    outs = [b_out[o] for o in range(num_outputs)]
    for j in range(hidden_size):
        h = bias[j]
        for f, x in enumerate(xs):
            h = h + x * w_in[f, j]
        h = jnp.maximum(h, 0.0)
        outs = [out + h * w_out[j, o] for o, out in enumerate(outs)]
    return tuple(outs)


_HIGHEST = jax.lax.Precision.HIGHEST


def _stack_entries(arrays) -> jax.Array:
    """Arrays of one shape -> (len(arrays), N): the entries on the trailing axis."""
    return jnp.stack([jnp.reshape(a, (-1,)) for a in arrays])


def _pre_activation(w_in, bias, x_FN) -> jax.Array:
    """The hidden layer before its ReLU, (H, N), from the stacked inputs (F, N)."""
    return jnp.dot(w_in.T, x_FN, precision=_HIGHEST) + bias[:, None]


def _mlp_contracted(w_in, bias, w_out, b_out, xs):
    """Forward pass as two contractions over the stacked (F, N) inputs (see `_mlp_fwd`)."""
    shape = jnp.shape(xs[0])
    pre_HN = _pre_activation(w_in, bias, _stack_entries(xs))
    out_ON = jnp.dot(w_out.T, jnp.maximum(pre_HN, 0.0), precision=_HIGHEST) + b_out[:, None]
    return tuple(jnp.reshape(out_ON[o], shape) for o in range(out_ON.shape[0]))


def _mlp_fwd(w_in, bias, w_out, b_out, xs):
    # Under differentiation the forward pass is the contracted one: its outputs are written
    # once by a dot, so each of their consumers in the forward and backward passes reads
    # them. The unrolled fusion is instead duplicated by XLA's CPU backend into every
    # consumer, and a meta-gradient has many (measured: the TBPTT learned-optimizer part of
    # the regression-MLP setup of experiments/bench_meta.py, NormMLPLOpt 127 -> 103 ms,
    # AdafacMLPLOpt 83 -> 75 ms, MLPLOpt unchanged). Without differentiation (PES, ES,
    # evaluation) the unrolled pass is faster (NormMLPLOpt 24 vs 28 ms, MLPLOpt 12 vs
    # 22 ms) and is what runs. Both compute the same network (equal up to float rounding).
    # Residuals are the inputs only: the backward pass recomputes the hidden layer, which
    # is cheaper than storing an (N, H) array per step of a rematerialized unroll.
    return _mlp_contracted(w_in, bias, w_out, b_out, xs), (w_in, bias, w_out, xs)


def _mlp_bwd(residuals, cotangents):
    """Closed-form VJP of a one-hidden-layer ReLU MLP (see the module docstring)."""
    w_in, bias, w_out, xs = residuals
    shape = jnp.shape(xs[0])
    x_FN = _stack_entries(xs)
    ct_ON = _stack_entries(cotangents)
    pre_HN = _pre_activation(w_in, bias, x_FN)
    dpre_HN = jnp.where(pre_HN > 0, jnp.dot(w_out, ct_ON, precision=_HIGHEST), 0.0)
    d_w_in = jnp.dot(x_FN, dpre_HN.T, precision=_HIGHEST)
    d_w_out = jnp.dot(jnp.maximum(pre_HN, 0.0), ct_ON.T, precision=_HIGHEST)
    dx_FN = jnp.dot(w_in, dpre_HN, precision=_HIGHEST)
    d_xs = tuple(jnp.reshape(dx_FN[f], shape) for f in range(len(xs)))
    return d_w_in, jnp.sum(dpre_HN, axis=1), d_w_out, jnp.sum(ct_ON, axis=1), d_xs


# Forward unrolled (fast, no N x H array) unless differentiated, backward in closed form
# (see the module docstring and `_mlp_fwd`). Each is a jitted function: JAX then traces and
# batches its hundreds of primitives once per shape, not at every call site and every
# batching pass of a vmapped scan (the same HLO: XLA inlines the calls). Measured, paired
# A B A B: the 8-group mixture step of experiments/configs/meta_mixed.py (num_groups=4)
# traces in 5.5-6.0 s instead of 12.0-12.6 s and lowers in 1.2-1.3 s instead of 1.9-2.3 s;
# its compile and step times are unchanged.
_mlp = jax.custom_vjp(jax.jit(_mlp_unrolled))
_mlp.defvjp(jax.jit(_mlp_fwd), jax.jit(_mlp_bwd))


def mlp_apply(theta: dict, xs: Sequence[jax.Array], z: jax.Array) -> list[jax.Array]:
    """One-hidden-layer ReLU MLP applied to every entry: F feature arrays -> O output arrays.

    Args:
      theta: weights from `mlp_init` (possibly batched by vmap).
      xs: F float32 arrays of one shape (the features of every parameter entry).
      z: (G,) per-tensor features.
    """
    bias = theta["b_in"] + z @ theta["w_global"]
    return list(_mlp(theta["w_in"], bias, theta["w_out"], theta["b_out"], tuple(xs)))


def lstm_init(key: jax.Array, num_inputs: int, hidden_size: int) -> dict:
    """Weights of `lstm_cell`: `w_x` (I, 4H), `w_h` (H, 4H), `b` (4H,) with the forget gate
    bias at 1 (gate order: input, forget, cell, output)."""
    k_x, k_h = jax.random.split(key)
    bias = jnp.zeros((4 * hidden_size,), jnp.float32).at[hidden_size:2 * hidden_size].set(1.0)
    return {"w_x": dense_init(k_x, num_inputs, 4 * hidden_size),
            "w_h": dense_init(k_h, hidden_size, 4 * hidden_size), "b": bias}


def lstm_cell(theta: dict, x: jax.Array, h: jax.Array, c: jax.Array
              ) -> tuple[jax.Array, jax.Array]:
    """A standard LSTM cell on (..., I) inputs and (..., H) state -> new (h, c)."""
    gates = x @ theta["w_x"] + h @ theta["w_h"] + theta["b"]
    i, f, g, o = jnp.split(gates, 4, axis=-1)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    return jax.nn.sigmoid(o) * jnp.tanh(c), c
