"""Communication volume of a compiled program, read from its HLO text.

XLA's SPMD partitioner decides which collectives a sharded `jit` program needs; the only
faithful way to know what a step communicates is to look at the compiled module. This module
finds every all-reduce, all-gather, reduce-scatter, collective-permute and all-to-all and sums
the bytes of their operands (the data one device puts into the collective).

    stats = collective_stats(jax.jit(step).lower(params, opt_state, batch).compile().as_text())
    stats.total_bytes, stats.by_op["all-reduce"].count

Operand sizes are derived from the printed result shapes (compiled HLO does not print operand
shapes): an all-reduce or collective-permute result has its operand's size, an all-gather result
is `group_size` operands, a reduce-scatter result is `1 / group_size` of its operand. Async pairs
(`*-start` / `*-done`) are counted once, at `-start`. Collectives whose replica groups hold
one device each (a psum over a size-1 mesh axis) move no data and are not counted.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import NamedTuple

import jax

COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "collective-permute", "all-to-all")

DTYPE_BYTES = {
    "pred": 1, "s8": 1, "u8": 1, "f8e4m3fn": 1, "f8e5m2": 1,
    "s16": 2, "u16": 2, "f16": 2, "bf16": 2,
    "s32": 4, "u32": 4, "f32": 4,
    "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16,
}  # fmt: skip

_INSTRUCTION = re.compile(
    r"^\s*(?:ROOT\s+)?%?[\w.\-]+\s*=\s*(?P<shape>.+?)\s+"
    r"(?P<op>" + "|".join(COLLECTIVES) + r")(?P<start>-start)?\("
)
_ARRAY_SHAPE = re.compile(r"\b(?P<dtype>[a-z]+\d*[a-z0-9]*)\[(?P<dims>[\d,]*)\]")
_GROUPS_LISTED = re.compile(r"replica_groups=\{(?P<groups>\{[\d,]*\}(?:,\{[\d,]*\})*)\}")
_GROUPS_IOTA = re.compile(r"replica_groups=\[(?P<num>\d+),(?P<size>\d+)\]<=")
_NUM_PARTITIONS = re.compile(r"num_partitions=(\d+)")


class OpStats(NamedTuple):
    """How many collectives of one kind, their summed operand bytes per device, and the
    operand bytes of the largest one (tells a gather of per-device partial results from a
    gather of a whole tensor)."""

    count: int
    bytes: int
    largest: int = 0


class CommStats(NamedTuple):
    """Collectives of a compiled program, by op name (see `COLLECTIVES`)."""

    by_op: dict[str, OpStats]

    @property
    def total_bytes(self) -> int:
        return sum(s.bytes for s in self.by_op.values())

    @property
    def total_count(self) -> int:
        return sum(s.count for s in self.by_op.values())

    def as_dict(self) -> dict:
        """JSON-able summary: `{op: {"count", "bytes"}, "total_bytes": ...}`."""
        out = {op: {"count": s.count, "bytes": s.bytes, "largest_bytes": s.largest}
               for op, s in self.by_op.items()}
        out["total_bytes"] = self.total_bytes
        out["total_count"] = self.total_count
        return out


def array_bytes(shape_text: str) -> list[int]:
    """Bytes of every array shape in an HLO shape string, e.g. `(f32[8,3]{1,0}, s32[])`."""
    sizes = []
    for match in _ARRAY_SHAPE.finditer(shape_text):
        dtype = match["dtype"]
        if dtype not in DTYPE_BYTES:
            raise ValueError(f"unknown HLO dtype {dtype!r} in {shape_text!r}")
        elements = 1
        for dim in filter(None, match["dims"].split(",")):
            elements *= int(dim)
        sizes.append(elements * DTYPE_BYTES[dtype])
    return sizes


def _group_size(line: str, num_partitions: int) -> int:
    if listed := _GROUPS_LISTED.search(line):
        first = listed["groups"].split("}")[0].strip("{,")
        return len([d for d in first.split(",") if d]) or num_partitions
    if iota := _GROUPS_IOTA.search(line):
        return int(iota["size"])
    return num_partitions  # `replica_groups={}`: one group of every device


def _operand_bytes(op: str, is_start: bool, result_bytes: list[int], group: int) -> int:
    if is_start and op in ("all-gather", "collective-permute", "all-to-all"):
        # Async starts return (operands..., outputs..., [sync flags]); operands come first.
        if op == "collective-permute":
            return result_bytes[0]
        result_bytes = result_bytes[len(result_bytes) // 2 :]
    total = sum(result_bytes)
    if op == "all-gather":
        return total // group
    if op == "reduce-scatter":
        return total * group
    return total


def collective_stats(hlo_text: str) -> CommStats:
    """Count collectives and their operand bytes in compiled HLO text."""
    partitions = _NUM_PARTITIONS.search(hlo_text)
    num_partitions = int(partitions.group(1)) if partitions else 1
    counts = {op: [0, 0, 0] for op in COLLECTIVES}
    for line in hlo_text.splitlines():
        match = _INSTRUCTION.match(line)
        if not match:
            continue
        op = match["op"]
        group = _group_size(line, num_partitions)
        if group == 1 and op != "collective-permute":
            continue  # a collective over one device (e.g. psum over a size-1 axis) moves nothing
        nbytes = _operand_bytes(op, bool(match["start"]), array_bytes(match["shape"]), group)
        counts[op][0] += 1
        counts[op][1] += nbytes
        counts[op][2] = max(counts[op][2], nbytes)
    return CommStats({op: OpStats(*c) for op, c in counts.items()})


def compiled_text(fn: Callable, *args, **kwargs) -> str:
    """HLO text of `fn` compiled for `args` (jitted first if it is not already)."""
    jitted = fn if hasattr(fn, "lower") else jax.jit(fn)
    return jitted.lower(*args, **kwargs).compile().as_text()


def communication_of(fn: Callable, *args, **kwargs) -> CommStats:
    """`collective_stats` of `fn` compiled for these arguments."""
    return collective_stats(compiled_text(fn, *args, **kwargs))
