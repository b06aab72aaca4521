"""Pipeline schedules as tables: which micro-batch each stage runs forward / backward at each tick.

A schedule is pure Python (numpy), computed before tracing. `parallel.pipeline_stages` feeds the
same tables into its `lax.scan` over ticks (a stage looks up its own column), and benchmarks
count idle stage-ticks (the bubble) and live activations from them: what is measured is what runs.

A tick is one op slot per stage (a forward or a backward of one micro-batch, or idle), then
activations move one stage forward and cotangents one stage backward with one `ppermute` each.
Two schedules, both with the bubble (p-1)/(m+p-1) of idle slots (Huang et al. 2019; Narayanan et
al. 2019/2021 for 1F1B):

  "gpipe"  all forwards (stage s runs F(i) at tick i + s, ticks 0 .. m+p-2), then all backwards,
           the forward ticks mirrored (what `jax.grad` of the forward scan runs). Stage s keeps
           the activations of all m micro-batches until its backwards start.
  "1f1b"   PipeDream-Flush: stage s runs a warm-up of min(p-1-s, m) forwards, then alternates
           one forward and one backward of different micro-batches, then drains the remaining
           backwards. With unit-time ops:
               F(i) at tick s + i        for i < p - s   (warm-up, and the first steady forward)
               F(i) at tick 2i + s       for i >= p - s  (steady state, after B(i - p + s))
               B(i) at tick 2p - 1 - s + 2i
           so 2(m+p-1) ticks in all, like GPipe, but stage s never holds more than
           min(p - s, m) <= p micro-batches: a ring buffer of p stage inputs, whatever m is.
           In the steady state neighbouring stages run different ops in the same tick (one a
           forward, the other a backward), which SPMD code does with a `lax.switch` on the
           stage's own table entry (or, for stage programs with collective-permutes, by
           computing both and keeping one: `parallel.pipeline_stages`). A cotangent is
           consumed the tick after it is sent; a forward activation waits at most once per
           stage (micro-batch p - s, sent in the warm-up, used after B(0)), in a one-slot
           inbox.

    table = schedule_table("1f1b", num_stages=4, num_microbatches=8)
    table.forward[t, s]            # micro-batch run forward by stage s at tick t, -1 when idle
    bubble_fraction(table)         # idle op slots / all op slots == (p-1)/(m+p-1)
    max_live_microbatches(table)   # per stage, the most micro-batches forwarded, not backwarded
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

GPIPE, ONE_F_ONE_B = "gpipe", "1f1b"
SCHEDULES = (GPIPE, ONE_F_ONE_B)
IDLE = -1


class ScheduleTable(NamedTuple):
    """Per tick and stage, the micro-batch run forward / backward (IDLE = -1 when none).

    At most one of `forward[t, s]`, `backward[t, s]` is not IDLE: one op slot per stage-tick.
    """

    schedule: str
    num_stages: int
    num_microbatches: int
    forward: np.ndarray  # int32 [num_ticks, num_stages]
    backward: np.ndarray  # int32 [num_ticks, num_stages]

    @property
    def num_ticks(self) -> int:
        return int(self.forward.shape[0])


def check_schedule(schedule: str) -> str:
    """`schedule` itself, or a ValueError naming the valid schedules."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown pipeline schedule {schedule!r}; valid schedules: {SCHEDULES}")
    return schedule


def _check_sizes(num_stages: int, num_microbatches: int) -> None:
    if int(num_stages) < 1:
        raise ValueError(f"num_stages must be >= 1, got {num_stages}")
    if int(num_microbatches) < 1:
        raise ValueError(f"num_microbatches must be >= 1, got {num_microbatches}")


def forward_tick(schedule: str, stage: int, microbatch: int, num_stages: int) -> int:
    """The tick at which `stage` runs the forward of `microbatch`."""
    if schedule == GPIPE or microbatch < num_stages - stage:
        return stage + microbatch
    return 2 * microbatch + stage


def backward_tick_1f1b(stage: int, microbatch: int, num_stages: int) -> int:
    """The tick at which `stage` runs the backward of `microbatch` under 1F1B."""
    return 2 * num_stages - 1 - stage + 2 * microbatch


def num_ticks(schedule: str, num_stages: int, num_microbatches: int) -> int:
    """Ticks of the GPipe forward scan (its backward is the reversed scan) or of the 1F1B scan."""
    check_schedule(schedule)
    if schedule == GPIPE:
        return num_microbatches + num_stages - 1
    return 2 * (num_microbatches + num_stages - 1)


def schedule_table(schedule: str, num_stages: int, num_microbatches: int) -> ScheduleTable:
    """The full table of `schedule` for `num_stages` stages and `num_microbatches` micro-batches.

    For GPipe the table includes the backward ticks that `jax.grad` of the forward scan runs (the
    scan reversed), so both schedules are compared on whole training steps.
    """
    check_schedule(schedule)
    _check_sizes(num_stages, num_microbatches)
    p, m = int(num_stages), int(num_microbatches)
    ticks = 2 * (m + p - 1)
    forward = np.full((ticks, p), IDLE, np.int32)
    backward = np.full((ticks, p), IDLE, np.int32)
    for s in range(p):
        for i in range(m):
            forward[forward_tick(schedule, s, i, p), s] = i
            if schedule == GPIPE:
                # Backward tick u mirrors forward tick (m+p-2) - u of the forward scan.
                backward[ticks - 1 - (s + i), s] = i
            else:
                backward[backward_tick_1f1b(s, i, p), s] = i
    if np.any((forward != IDLE) & (backward != IDLE)):  # pragma: no cover - formula invariant
        raise AssertionError(f"{schedule}: a stage-tick holds two ops (p={p}, m={m})")
    return ScheduleTable(schedule, p, m, forward, backward)


def bubble_fraction(table: ScheduleTable) -> float:
    """Idle op slots over all op slots (each stage runs one forward and one backward per
    micro-batch, one op per tick)."""
    busy = int(np.sum(table.forward != IDLE) + np.sum(table.backward != IDLE))
    return 1.0 - busy / (table.num_ticks * table.num_stages)


def gpipe_bubble_formula(num_stages: int, num_microbatches: int) -> float:
    """The bubble (p-1)/(m+p-1) of GPipe (Huang et al. 2019), which 1F1B shares."""
    return (num_stages - 1) / (num_microbatches + num_stages - 1)


def max_live_microbatches(table: ScheduleTable) -> np.ndarray:
    """Per stage, the most micro-batches whose forward has run and backward has not (after each
    tick: what a stage must hold at once)."""
    live = np.cumsum(table.forward != IDLE, axis=0) - np.cumsum(table.backward != IDLE, axis=0)
    return live.max(axis=0)


def _op_ticks(ops: np.ndarray, stage: int, num_microbatches: int) -> np.ndarray:
    """Tick of each micro-batch's op on `stage` (ops: table.forward or table.backward)."""
    return np.array([np.flatnonzero(ops[:, stage] == i)[0] for i in range(num_microbatches)])


def max_waiting_activations(table: ScheduleTable) -> np.ndarray:
    """Per stage, the most activations that have arrived from the previous stage (sent at tick
    t, usable from tick t + 1) but are not yet run forward, at the start of any tick. 1F1B's
    inbox has one slot: this must stay <= 1."""
    m = table.num_microbatches
    waiting = np.zeros(table.num_stages, dtype=int)
    for s in range(1, table.num_stages):
        sent = _op_ticks(table.forward, s - 1, m)
        used = _op_ticks(table.forward, s, m)
        for t in range(table.num_ticks):
            waiting[s] = max(waiting[s], int(np.sum(sent < t) - np.sum(used < t)))
    return waiting


def cotangent_delays(table: ScheduleTable) -> np.ndarray:
    """Per stage s < p-1, the largest gap in ticks between B(i) on s+1 and B(i) on s. 1F1B
    keeps no cotangent buffer (what arrives is used in the next tick): every gap must be 1."""
    m = table.num_microbatches
    return np.array([
        int(np.max(_op_ticks(table.backward, s, m) - _op_ticks(table.backward, s + 1, m)))
        for s in range(table.num_stages - 1)
    ], dtype=int)


def stash_size_1f1b(num_stages: int) -> int:
    """Slots of the 1F1B ring buffer of stage inputs: p, the most micro-batches stage 0 holds.

    Micro-batch i goes to slot i % p; micro-batch i + p is forwarded at tick 2(i + p) + s,
    2s + 1 ticks after B(i) freed the slot, so slots never collide.
    """
    return int(num_stages)
