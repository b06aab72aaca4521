"""The per-parameter MLP of learned_opt/nets.py: its hand-written VJP equals the VJP of a plain
reference MLP (the meta-gradients of MLPLOpt, AdafacMLPLOpt and HyperLOpt go through it)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from learned_opt import nets


def reference_mlp(theta, xs, z):
    """The textbook network: features on a trailing axis, one ReLU layer, matmuls."""
    x = jnp.stack(xs, axis=-1)
    hidden = jax.nn.relu(x @ theta["w_in"] + theta["b_in"] + z @ theta["w_global"])
    out = hidden @ theta["w_out"] + theta["b_out"]
    return [out[..., o] for o in range(out.shape[-1])]


def random_case(seed, shape, num_inputs, hidden_size, num_outputs, num_global=4):
    """Weights, inputs and output cotangents, drawn with numpy (eager jax.random would compile
    a small program per shape)."""
    rng = np.random.default_rng(seed)
    normal = lambda *s: jnp.asarray(rng.standard_normal(s), jnp.float32)
    theta = {"w_in": normal(num_inputs, hidden_size) / np.sqrt(num_inputs),
             "w_global": normal(num_global, hidden_size),
             # nonzero biases, so that units switch on and off across the entries
             "b_in": 0.5 * normal(hidden_size),
             "w_out": normal(hidden_size, num_outputs) / np.sqrt(hidden_size),
             "b_out": normal(num_outputs)}
    assert jax.tree.structure(theta) == jax.tree.structure(
        jax.eval_shape(lambda: nets.mlp_init(jax.random.key(0), num_inputs, num_global,
                                             hidden_size, num_outputs)))
    xs = list(normal(num_inputs, *shape))
    cotangents = list(normal(num_outputs, *shape))
    return theta, xs, normal(num_global), cotangents


def _jitted_vjp(fn):
    def run(theta, xs, z, cotangents):
        outputs, pullback = jax.vjp(fn, theta, xs, z)
        return outputs, pullback(cotangents)
    return jax.jit(run)


# Jitted once per module (eagerly, the unrolled forward pass would dispatch F * H tiny
# operations one by one); each shape compiles once.
_VJPS = {nets.mlp_apply: _jitted_vjp(nets.mlp_apply), reference_mlp: _jitted_vjp(reference_mlp)}


def vjp_of(fn, theta, xs, z, cotangents):
    """(outputs, cotangents of (theta, xs, z)) of `fn` at the given output cotangents."""
    return _VJPS[fn](theta, xs, z, cotangents)


@pytest.mark.parametrize("shape,num_inputs,hidden_size,num_outputs", [
    ((3, 5), 6, 8, 2),
    ((7,), 3, 1, 1),
    ((), 2, 5, 3),
    ((0, 6), 6, 16, 2),       # a zero-size leaf
    ((2, 3, 4), 5, 32, 2),
])
def test_mlp_vjp_matches_reference(shape, num_inputs, hidden_size, num_outputs):
    theta, xs, z, cotangents = random_case(len(shape) + hidden_size, shape, num_inputs,
                                           hidden_size, num_outputs)
    got_out, got = vjp_of(nets.mlp_apply, theta, xs, z, cotangents)
    want_out, want = vjp_of(reference_mlp, theta, xs, z, cotangents)
    for a, b in zip(got_out, want_out, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    got_leaves, got_def = jax.tree.flatten(got)
    want_leaves, want_def = jax.tree.flatten(want)
    assert got_def == want_def
    for path, a, b in zip(jax.tree_util.tree_flatten_with_path(got)[0], got_leaves, want_leaves,
                          strict=True):
        assert a.shape == b.shape, path[0]
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=str(path[0]))


def test_mlp_vjp_each_output_alone():
    """Every output's cotangent reaches theta and the inputs on its own (zero for the other)."""
    theta, xs, z, cotangents = random_case(1, (3, 5), 6, 8, 2)  # shapes compiled above
    for o in range(2):
        only = [c if i == o else jnp.zeros_like(c) for i, c in enumerate(cotangents)]
        _, got = vjp_of(nets.mlp_apply, theta, xs, z, only)
        _, want = vjp_of(reference_mlp, theta, xs, z, only)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_mlp_vjp_under_vmap_and_jit():
    """As meta-training uses it: theta shared by a vmapped population, gradient jitted."""
    theta, xs_TN, z, _ = random_case(2, (5, 10), 6, 16, 2)  # 5 tasks of 10 entries

    def loss(fn):
        def total(theta, xs):
            outs = jax.vmap(lambda xs: fn(theta, xs, z))(xs)
            return jnp.sum(jnp.sin(outs[0]) * outs[1]) + jnp.sum(outs[1] ** 2)
        return jax.jit(jax.grad(total, argnums=(0, 1)))

    got = loss(nets.mlp_apply)(theta, xs_TN)
    want = loss(reference_mlp)(theta, xs_TN)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_mlp_differentiated_forward_equals_plain_forward():
    """Under differentiation the forward pass is the contracted one (`nets._mlp_fwd`); it
    computes what the unrolled pass does without differentiation."""
    theta, xs, z, cotangents = random_case(1, (3, 5), 6, 8, 2)  # shapes compiled above
    got_out, _ = vjp_of(nets.mlp_apply, theta, xs, z, cotangents)
    plain = jax.jit(nets.mlp_apply)(theta, xs, z)
    for a, b in zip(got_out, plain, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
