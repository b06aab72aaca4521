"""The registry of learned-optimizer architectures: `register`, `get_lopt`, `list_lopts`.

    @register("my_lopt")
    class MyLOpt(LearnedOptimizer): ...

    lopt = get_lopt("my_lopt", hidden_size=16)      # == MyLOpt(hidden_size=16)
    get_lopt(**lopt.config())                       # rebuilds lopt
    list_lopts()                                    # [..., "my_lopt", ...]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from learned_opt.base import LearnedOptimizer

_REGISTRY: dict[str, type[LearnedOptimizer]] = {}


def register(name: str) -> Callable[[type], type]:
    """Class decorator: register an architecture under `name` and set its `name` attribute."""

    def wrap(cls: type) -> type:
        if name in _REGISTRY:
            raise ValueError(f"learned optimizer {name!r} is already registered")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def get_lopt(name: str, **kwargs) -> LearnedOptimizer:
    """The architecture registered as `name`, built with hyperparameters `kwargs`.

    `get_lopt(**lopt.config())` rebuilds `lopt` (the `name` key is accepted).
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown learned optimizer {name!r}; valid names: {list_lopts()}")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    try:
        return _REGISTRY[name](**kwargs)
    except TypeError as e:
        fields = [f.name for f in dataclasses.fields(_REGISTRY[name]) if f.init]
        raise TypeError(f"bad hyperparameters for {name!r}: {e}; valid: {fields}") from None


def list_lopts() -> list[str]:
    """Names accepted by `get_lopt`."""
    return sorted(_REGISTRY)


def registered() -> Mapping[str, type[LearnedOptimizer]]:
    """Every registered architecture class by name, in registration order (read-only view)."""
    return dict(_REGISTRY)
