"""Up-front checks of the size arguments of task factories (widths, depths, batch sizes, ...).

A bad size should fail with a ValueError naming the argument before any data is loaded or any
network is built, not as a ZeroDivisionError deep inside an initializer. One table says what
each size argument of the zoo must be; `check_sizes` decorates a factory with it:

    @check_sizes
    def digits_mlp(hidden=(64,), activation="relu", batch_size=64): ...

    digits_mlp(hidden=(0,))   # ValueError: hidden must be a sequence of positive ints ...
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from numbers import Integral
from typing import Any

_COUNT = "count"  # a positive int
_WIDTHS = "widths"  # a (possibly empty) sequence of positive ints, one per layer
_NONEMPTY_WIDTHS = "nonempty_widths"  # the same, with at least one entry

SIZE_ARGUMENTS: dict[str, str] = {
    "batch_size": _COUNT,
    "dim": _COUNT,
    "input_dim": _COUNT,
    "width": _COUNT,
    "depth": _COUNT,
    "seq_len": _COUNT,
    "d_model": _COUNT,
    "num_heads": _COUNT,
    "num_layers": _COUNT,
    "hidden": _WIDTHS,
    "channels": _NONEMPTY_WIDTHS,
}
"""Size arguments of the task factories and what each must be."""


def _is_count(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool) and value >= 1


def check_size(name: str, value: Any) -> None:
    """ValueError naming `name` unless `value` is valid for that size argument (see
    `SIZE_ARGUMENTS`); arguments not in the table are left alone."""
    kind = SIZE_ARGUMENTS.get(name)
    if kind == _COUNT and not _is_count(value):
        raise ValueError(f"{name} must be a positive int; got {value!r}")
    if kind in (_WIDTHS, _NONEMPTY_WIDTHS):
        valid = isinstance(value, (tuple, list)) and all(_is_count(v) for v in value)
        if kind == _NONEMPTY_WIDTHS and valid and not value:
            raise ValueError(f"{name} needs at least one layer, e.g. (8, 16); got {value!r}")
        if not valid:
            raise ValueError(
                f"{name} must be a sequence of positive ints, one per layer, e.g. (64, 64); "
                f"got {value!r}"
            )


def check_sizes(factory: Callable[..., Any]) -> Callable[..., Any]:
    """`factory` that first checks every size argument it receives (defaults included)."""
    signature = inspect.signature(factory)

    @functools.wraps(factory)
    def checked(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        for name, value in bound.arguments.items():
            check_size(name, value)
        return factory(*args, **kwargs)

    return checked
