"""What a gradient step costs in memory, read from the compiled program (nothing runs).

`compiled_memory` is XLA's memory analysis of any jitted function; `memory_stats` is that of one
`value_and_grad` step plus the residuals its forward pass saves for the backward, each with the
operation it comes from:

    from parallel import remat
    stats = remat.memory_stats(loss_fn, params, batch)    # arrays or jax.ShapeDtypeStructs
    print(stats.temp_bytes, stats.residual_bytes, [r.source for r in stats.residuals])
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.ad_checkpoint  # a submodule `import jax` does not load; saved_residuals uses it
import numpy as np


class Residual(NamedTuple):
    """One value the backward pass keeps from the forward pass."""

    shape: tuple[int, ...]
    dtype: str
    nbytes: int
    source: str  # e.g. "output of tanh from model.py:12 (block)" or "from the argument x"

    @property
    def is_argument(self) -> bool:
        """Arguments are alive anyway: keeping them costs no extra memory."""
        return "from the argument" in self.source


class MemoryStats(NamedTuple):
    """Compiled memory of a program, plus (for a gradient) what its forward pass saves."""

    temp_bytes: int
    argument_bytes: int
    output_bytes: int
    alias_bytes: int
    host_temp_bytes: int
    residuals: tuple[Residual, ...] = ()

    @property
    def footprint_bytes(self) -> int:
        """Device bytes live while the program runs: arguments + outputs + temporaries."""
        return self.argument_bytes + self.output_bytes + self.temp_bytes - self.alias_bytes

    @property
    def residual_bytes(self) -> int:
        """Bytes of saved residuals that are not arguments (what remat policies shrink)."""
        return sum(r.nbytes for r in self.residuals if not r.is_argument)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able figures (residuals as a count and a byte total)."""
        return {
            "temp_bytes": self.temp_bytes,
            "argument_bytes": self.argument_bytes,
            "output_bytes": self.output_bytes,
            "alias_bytes": self.alias_bytes,
            "host_temp_bytes": self.host_temp_bytes,
            "footprint_bytes": self.footprint_bytes,
            "num_residuals": len(self.residuals),
            "residual_bytes": self.residual_bytes,
        }


def compiled_memory(fn: Callable[..., Any], *args, **kwargs) -> MemoryStats:
    """Memory analysis of `jax.jit(fn)` compiled for `args` (arrays or `jax.ShapeDtypeStruct`s);
    nothing runs. Residuals are left empty: see `memory_stats` for a gradient's residuals."""
    analysis = jax.jit(fn).lower(*args, **kwargs).compile().memory_analysis()
    if analysis is None:
        raise RuntimeError(f"backend {jax.default_backend()!r} reports no compiled memory analysis")
    return MemoryStats(
        temp_bytes=int(analysis.temp_size_in_bytes),
        argument_bytes=int(analysis.argument_size_in_bytes),
        output_bytes=int(analysis.output_size_in_bytes),
        alias_bytes=int(analysis.alias_size_in_bytes),
        host_temp_bytes=int(getattr(analysis, "host_temp_size_in_bytes", 0)),
    )


def saved_residuals(fn: Callable[..., Any], *args) -> tuple[Residual, ...]:
    """The values `jax.vjp(fn, *args)` keeps for the backward pass, with where each comes from.

    Shapes come from the vjp closure's leaves; sources from `jax.ad_checkpoint.
    print_saved_residuals` (the public form of the same analysis, which lists them in the same
    order). Traced abstractly: nothing runs.
    """
    shapes = jax.tree.leaves(jax.eval_shape(lambda *a: jax.vjp(fn, *a)[1], *args))
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        jax.ad_checkpoint.print_saved_residuals(fn, *args)
    lines = printed.getvalue().splitlines()
    sources = [line.partition(" ")[2] for line in lines]
    if len(sources) != len(shapes):  # should not happen; keep the sizes, drop the labels
        sources = ["unknown"] * len(shapes)
    return tuple(
        Residual(
            shape=tuple(s.shape),
            dtype=str(s.dtype),
            nbytes=int(np.prod(s.shape, dtype=np.int64)) * np.dtype(s.dtype).itemsize,
            source=src,
        )
        for s, src in zip(shapes, sources, strict=True)
    )


def memory_stats(
    fn: Callable[..., Any], *args, argnums: int | Sequence[int] = 0, has_aux: bool = False
) -> MemoryStats:
    """Memory of one gradient step of the scalar function `fn`, without running it.

    Compiles `jax.value_and_grad(fn, argnums, has_aux)` for `args` and reports its temporary,
    argument and output bytes, plus the residuals `fn`'s forward pass saves for the backward.

    Args:
      fn: scalar loss, e.g. `loss(params, batch)` whose blocks call `checkpoint(..., policy)`.
      *args: arrays or `jax.ShapeDtypeStruct`s.
      argnums, has_aux: as in `jax.value_and_grad`.

    Example:
      stats = memory_stats(loss, params, batch)
      print(stats.temp_bytes, stats.residual_bytes, [r.source for r in stats.residuals])
    """
    step = jax.value_and_grad(fn, argnums=argnums, has_aux=has_aux)
    compiled = compiled_memory(step, *args)
    forward = (lambda *a: fn(*a)[0]) if has_aux else fn
    return compiled._replace(residuals=saved_residuals(forward, *args))
