"""Architecture search spaces over the task zoo's datasets, as declarative `SearchSpace`s.

    space = search_space("mlp")                 # depth, width_1..width_D (conditional), activation
    arch = arch_from_params("mlp", params)      # {"hidden": (64, 32), "activation": "relu"}
    task = build_task("mlp", "digits", arch)    # a models Task (train / valid / test splits)
    default_arch("cnn", "mnist1d")              # the zoo's hand-picked architecture

Families and datasets: "mlp" and "cnn" on "digits" (8x8 images) and "mnist1d" (40-sample
signals), "transformer" on "text" (the standard-library character corpus). The CNN here has
per-layer kernel sizes and a choice of downsampling (strided conv, max or average pooling);
with stride downsampling and one kernel size it is the zoo's CNN.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
from flax import nnx

from experiments.automl.space import Categorical, Int, SearchSpace

FAMILIES = ("mlp", "cnn", "transformer")
DATASETS = {"mlp": ("digits", "mnist1d"), "cnn": ("digits", "mnist1d"), "transformer": ("text",)}
POOLINGS = ("stride", "max", "avg")
INPUT_SHAPES = {"digits": (8, 8, 1), "mnist1d": (40, 1)}


def _check(family: str, dataset: str | None = None) -> None:
    if family not in FAMILIES:
        raise ValueError(f"unknown architecture family {family!r}; valid: {FAMILIES}")
    if dataset is not None and dataset not in DATASETS[family]:
        raise ValueError(f"family {family!r} runs on datasets {DATASETS[family]}, got "
                         f"{dataset!r}")


def search_space(family: str, *, max_layers: int = 3,
                 widths: Sequence[int] = (16, 32, 64, 128),
                 activations: Sequence[str] = ("relu", "tanh", "gelu"),
                 channels: Sequence[int] = (8, 16, 32), kernel_sizes: Sequence[int] = (3, 5),
                 heads: Sequence[int] = (1, 2, 4),
                 model_widths: Sequence[int] = (32, 64, 128)) -> SearchSpace:
    """The declarative space of `family` (conditional per-layer parameters up to `max_layers`)."""
    _check(family)
    if max_layers < 1:
        raise ValueError(f"max_layers must be >= 1, got {max_layers}")
    depths = lambda i: tuple(range(i, max_layers + 1))  # noqa: E731  layer i exists
    if family == "mlp":
        params = {"depth": Int(1, max_layers)}
        params |= {f"width_{i}": Categorical(tuple(widths), when={"depth": depths(i)})
                   for i in range(1, max_layers + 1)}
        params["activation"] = Categorical(tuple(activations))
        return SearchSpace(params)
    if family == "cnn":
        params = {"layers": Int(1, max_layers)}
        for i in range(1, max_layers + 1):
            params[f"channels_{i}"] = Categorical(tuple(channels), when={"layers": depths(i)})
            params[f"kernel_{i}"] = Categorical(tuple(kernel_sizes), when={"layers": depths(i)})
        params["pooling"] = Categorical(POOLINGS)
        params["activation"] = Categorical(tuple(activations))
        return SearchSpace(params)
    bad = [(h, d) for h in heads for d in model_widths if d % h]
    if bad:
        raise ValueError(f"every model width must be divisible by every head count; "
                         f"(heads, width) pairs that are not: {bad}")
    return SearchSpace({"num_layers": Int(1, max_layers), "num_heads": Categorical(tuple(heads)),
                        "d_model": Categorical(tuple(model_widths))})


def arch_from_params(family: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """A trial's parameters as the architecture `build_task` takes."""
    _check(family)
    if family == "mlp":
        hidden = tuple(int(params[f"width_{i}"]) for i in range(1, int(params["depth"]) + 1))
        return {"hidden": hidden, "activation": params["activation"]}
    if family == "cnn":
        layers = range(1, int(params["layers"]) + 1)
        return {"channels": tuple(int(params[f"channels_{i}"]) for i in layers),
                "kernels": tuple(int(params[f"kernel_{i}"]) for i in layers),
                "pooling": params["pooling"], "activation": params["activation"]}
    return {"num_layers": int(params["num_layers"]), "num_heads": int(params["num_heads"]),
            "d_model": int(params["d_model"])}


def default_arch(family: str, dataset: str) -> dict[str, Any]:
    """The zoo's hand-picked architecture (models/registry.py defaults)."""
    _check(family, dataset)
    if family == "mlp":
        return {"hidden": (64,) if dataset == "digits" else (100, 100), "activation": "relu"}
    if family == "cnn":
        channels = (8, 16) if dataset == "digits" else (32, 32, 32)
        return {"channels": channels, "kernels": (3,) * len(channels), "pooling": "stride",
                "activation": "relu"}
    return {"num_layers": 2, "num_heads": 4, "d_model": 64}


class SearchCNN(nnx.Module):
    """1-D / 2-D CNN: per-layer kernel sizes; layers after the first halve the resolution by a
    stride-2 conv ("stride") or a 2-window max / average pool; global mean pool, readout."""

    def __init__(self, input_shape: Sequence[int], channels: Sequence[int],
                 kernels: Sequence[int], out_features: int, *, pooling: str = "stride",
                 activation: str = "relu", rngs: nnx.Rngs):
        from models.nets import get_activation

        if pooling not in POOLINGS or len(channels) != len(kernels) or not channels:
            raise ValueError(f"need pooling in {POOLINGS} and one kernel size per layer; got "
                             f"pooling={pooling!r}, channels={channels}, kernels={kernels}")
        get_activation(activation)
        self.input_shape, self.pooling, self.activation = tuple(input_shape), pooling, activation
        rank = len(input_shape) - 1
        in_channels = (input_shape[-1], *channels[:-1])
        self.convs = nnx.List([
            nnx.Conv(c_in, c_out, kernel_size=(k,) * rank,
                     strides=2 if i and pooling == "stride" else 1, rngs=rngs)
            for i, (c_in, c_out, k) in enumerate(zip(in_channels, channels, kernels,
                                                     strict=True))])
        self.readout = nnx.Linear(channels[-1], out_features, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        from models.nets import get_activation

        act = get_activation(self.activation)
        h = x.reshape(x.shape[0], *self.input_shape)
        rank = len(self.input_shape) - 1
        for i, conv in enumerate(self.convs):
            if i and self.pooling != "stride":
                pool = nnx.max_pool if self.pooling == "max" else nnx.avg_pool
                h = pool(h, window_shape=(2,) * rank, strides=(2,) * rank, padding="SAME")
            h = act(conv(h))
        return self.readout(h.mean(axis=tuple(range(1, h.ndim - 1))))


def build_task(family: str, dataset: str, arch: Mapping[str, Any], *, batch_size: int = 64):
    """The task training `arch` of `family` on `dataset`."""
    import models

    _check(family, dataset)
    if family == "mlp":
        return models.get_task(f"{dataset}_mlp", hidden=tuple(arch["hidden"]),
                               activation=arch["activation"], batch_size=batch_size)
    if family == "transformer":
        return models.get_task("text_transformer", batch_size=batch_size, **dict(arch))
    from models import datasets
    from models.nets import Functional
    from models.tasks import SupervisedTask

    data = datasets.digits() if dataset == "digits" else datasets.mnist1d()
    net = Functional(lambda rngs: SearchCNN(
        INPUT_SHAPES[dataset], tuple(arch["channels"]), tuple(arch["kernels"]), 10,
        pooling=arch["pooling"], activation=arch["activation"], rngs=rngs))
    return SupervisedTask(f"{dataset}_search_cnn", net, data, batch_size, loss_kind="softmax")
