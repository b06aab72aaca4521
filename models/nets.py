"""Small flax NNX networks (MLP, residual MLP, CNN) seen by the rest of the library as pytrees.

NNX modules are stateful objects; learned optimizers, meta-training and the parallel code want
pure functions over plain pytrees. `Functional` bridges the two: it builds the module once
abstractly (no FLOPs), and exposes

    net = Functional(lambda rngs: MLP(64, (32, 32), 10, rngs=rngs))
    params = net.init(jax.random.key(0))     # nested dict of arrays (nnx.to_pure_dict)
    logits = net.apply(params, x)            # jittable, vmappable, differentiable

`init` and `apply` are pure, so `jax.vmap(net.init)(keys)` builds a population of networks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

PyTree = dict

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "gelu": jax.nn.gelu,
    "swish": jax.nn.swish,
    "elu": jax.nn.elu,
}


def get_activation(name: str) -> Callable[[jax.Array], jax.Array]:
    """The activation function called `name`; ValueError lists the valid names."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


class Functional:
    """Pure `init(key) -> params` / `apply(params, *args)` around an NNX module constructor.

    Args:
      make_module: `rngs -> nnx.Module`; called abstractly once here and for real in `init`.
    """

    def __init__(self, make_module: Callable[[nnx.Rngs], nnx.Module]):
        self._make_module = make_module
        abstract = nnx.eval_shape(lambda: make_module(nnx.Rngs(0)))
        self._graphdef, self._abstract_state = nnx.split(abstract)

    def init(self, key: jax.Array) -> PyTree:
        """Fresh parameters as a nested dict of arrays; pure in `key`."""
        module = self._make_module(nnx.Rngs(params=key))
        return nnx.to_pure_dict(nnx.state(module))

    def module(self, params: PyTree) -> nnx.Module:
        """The NNX module holding `params` (a fresh object; the template is never mutated)."""
        state = jax.tree.map(lambda leaf: leaf, self._abstract_state)
        nnx.replace_by_pure_dict(state, params)
        return nnx.merge(self._graphdef, state)

    def apply(self, params: PyTree, *args, **kwargs) -> jax.Array:
        """The module's forward pass with `params`."""
        return self.module(params)(*args, **kwargs)

    def param_shapes(self) -> PyTree:
        """Shapes of the parameters without computing them (nested dict of ShapeDtypeStruct)."""
        return jax.eval_shape(self.init, jax.random.key(0))


class MLP(nnx.Module):
    """Multi-layer perceptron: Linear -> activation, repeated, then a Linear readout.

    Inputs of any trailing shape are flattened per example (x_B... -> x_BF).
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int],
        out_features: int,
        *,
        activation: str = "relu",
        rngs: nnx.Rngs,
    ):
        self.activation = activation
        get_activation(activation)
        widths = (in_features, *hidden)
        self.hidden_layers = nnx.List(
            [nnx.Linear(a, b, rngs=rngs) for a, b in zip(widths[:-1], widths[1:], strict=True)]
        )
        self.readout = nnx.Linear(widths[-1], out_features, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        act = get_activation(self.activation)
        h = x.reshape(x.shape[0], -1)
        for layer in self.hidden_layers:
            h = act(layer(h))
        return self.readout(h)


class ResidualBlock(nnx.Module):
    """Pre-LayerNorm residual MLP block: x + W2 act(W1 LN(x))."""

    def __init__(self, width: int, expansion: int, activation: str, *, rngs: nnx.Rngs):
        self.activation = activation
        self.norm = nnx.LayerNorm(width, rngs=rngs)
        self.up = nnx.Linear(width, width * expansion, rngs=rngs)
        # Zero-initialized output projection: every block starts as the identity, which keeps
        # deep residual stacks well conditioned at init.
        self.down = nnx.Linear(
            width * expansion, width, kernel_init=nnx.initializers.zeros, rngs=rngs
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        return x + self.down(get_activation(self.activation)(self.up(self.norm(x))))


class ResMLP(nnx.Module):
    """Residual MLP: input projection, `depth` residual blocks, final LayerNorm and readout."""

    def __init__(
        self,
        in_features: int,
        width: int,
        depth: int,
        out_features: int,
        *,
        expansion: int = 2,
        activation: str = "relu",
        rngs: nnx.Rngs,
    ):
        get_activation(activation)
        self.embed = nnx.Linear(in_features, width, rngs=rngs)
        self.blocks = nnx.List(
            [ResidualBlock(width, expansion, activation, rngs=rngs) for _ in range(depth)]
        )
        self.norm = nnx.LayerNorm(width, rngs=rngs)
        self.readout = nnx.Linear(width, out_features, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = self.embed(x.reshape(x.shape[0], -1))
        for block in self.blocks:
            h = block(h)
        return self.readout(self.norm(h))


class CNN(nnx.Module):
    """Small CNN for 1-D (x_BLC) or 2-D (x_BHWC) inputs: strided convs, global mean pool, readout.

    The spatial rank comes from `input_shape` (without batch): (L, C) -> 1-D convs,
    (H, W, C) -> 2-D convs. Each conv after the first has stride 2 to halve the resolution.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        channels: Sequence[int],
        out_features: int,
        *,
        kernel_size: int = 3,
        activation: str = "relu",
        rngs: nnx.Rngs,
    ):
        if len(input_shape) not in (2, 3):
            raise ValueError(
                f"CNN input_shape must be (length, channels) or (height, width, channels) "
                f"without the batch axis; got {tuple(input_shape)}"
            )
        get_activation(activation)
        self.activation = activation
        self.input_shape = tuple(int(d) for d in input_shape)
        spatial_rank = len(input_shape) - 1
        in_channels = (input_shape[-1], *channels[:-1])
        self.convs = nnx.List(
            [
                nnx.Conv(
                    c_in,
                    c_out,
                    kernel_size=(kernel_size,) * spatial_rank,
                    strides=1 if i == 0 else 2,
                    rngs=rngs,
                )
                for i, (c_in, c_out) in enumerate(zip(in_channels, channels, strict=True))
            ]
        )
        self.readout = nnx.Linear(channels[-1], out_features, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        act = get_activation(self.activation)
        h = x.reshape(x.shape[0], *self.input_shape)
        for conv in self.convs:
            h = act(conv(h))
        spatial_axes = tuple(range(1, h.ndim - 1))
        return self.readout(h.mean(axis=spatial_axes))


def scale_params(params: PyTree, scale: jax.Array | float) -> PyTree:
    """Every parameter multiplied by `scale` (a family's initialization-scale knob)."""
    return jax.tree.map(lambda p: p * scale, params)


def num_params(params: PyTree) -> int:
    """Total number of scalars in a parameter pytree."""
    return sum(int(p.size) for p in jax.tree.leaves(params))
