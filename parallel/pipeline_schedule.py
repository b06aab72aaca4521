"""Pipeline schedules as tables: which micro-batch each stage runs forward / backward at each tick.

A schedule is pure Python (numpy), computed before tracing. `parallel.pipeline` consumes the same
arithmetic inside its `lax.scan` over ticks, and benchmarks count idle stage-ticks (the bubble)
and live activations from the tables, so what is measured is what runs.

Ticks are lockstep: every stage does its work of tick t, then activations move one stage forward
(and cotangents one stage backward) with one `ppermute` each. Two schedules:

  "gpipe"  all forwards (ticks 0 .. m+p-2), then all backwards in reverse (ticks m+p-1 ..
           2(m+p-1)-1). Each tick holds one op slot per stage. Stage s runs F(i) at tick i + s.
           Bubble (p-1)/(m+p-1); stage s keeps the activations of all m micro-batches.
  "1f1b"   every tick holds one forward slot and one backward slot per stage: F(i) at tick i + s,
           B(i) at tick i + 2(p-1) - s (the last stage runs F(i) and then B(i) in one tick).
           After a warm-up of p-1 ticks each stage alternates forwards and backwards of different
           micro-batches; stage s holds at most 2(p-1-s)+1 <= 2p-1 micro-batches whatever m is.
           Bubble (2p-2)/(m+2p-2) of op slots: lockstep SPMD cannot let one stage run a backward
           while its neighbour runs a forward (collectives of the data / model axes inside
           divergent branches deadlock), so the return trip of a micro-batch costs p-1 extra
           ticks against the classic asynchronous 1F1B's (p-1)/(m+p-1).

    table = schedule_table("1f1b", num_stages=4, num_microbatches=8)
    table.forward[t, s]      # micro-batch run forward by stage s at tick t, -1 when idle
    bubble_fraction(table)   # idle op slots / all op slots
    max_live_microbatches(table)   # per stage, the most micro-batches forwarded but not backwarded
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

GPIPE, ONE_F_ONE_B = "gpipe", "1f1b"
SCHEDULES = (GPIPE, ONE_F_ONE_B)
IDLE = -1


class ScheduleTable(NamedTuple):
    """Per tick and stage, the micro-batch run forward / backward (IDLE = -1 when none).

    `slots_per_tick` is 1 when a tick holds either a forward or a backward per stage (GPipe),
    2 when it holds one of each (1F1B).
    """

    schedule: str
    num_stages: int
    num_microbatches: int
    forward: np.ndarray  # int [num_ticks, num_stages]
    backward: np.ndarray  # int [num_ticks, num_stages]
    slots_per_tick: int

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


def forward_microbatch(tick, stage):
    """Micro-batch that `stage` runs forward at `tick` in both schedules (may be out of range)."""
    return tick - stage


def backward_microbatch_1f1b(tick, stage, num_stages: int):
    """Micro-batch that `stage` runs backward at `tick` under 1F1B (may be out of range)."""
    return tick - (2 * (num_stages - 1) - stage)


def num_ticks(schedule: str, num_stages: int, num_microbatches: int) -> int:
    """Ticks of the forward scan (GPipe; its backward is the reversed scan) or of the 1F1B scan."""
    check_schedule(schedule)
    if schedule == GPIPE:
        return num_microbatches + num_stages - 1
    return num_microbatches + 2 * (num_stages - 1)


def schedule_table(schedule: str, num_stages: int, num_microbatches: int) -> ScheduleTable:
    """The full table of `schedule` for `num_stages` stages and `num_microbatches` micro-batches.

    For GPipe the table includes the backward ticks that `jax.grad` of the forward scan runs (the
    scan reversed), so both schedules are compared on whole training steps.
    """
    check_schedule(schedule)
    _check_sizes(num_stages, num_microbatches)
    p, m = int(num_stages), int(num_microbatches)
    stages = np.arange(p)[None, :]

    def in_range(mb):
        return np.where((mb >= 0) & (mb < m), mb, IDLE)

    if schedule == GPIPE:
        forward_ticks = m + p - 1
        ticks = np.arange(forward_ticks)[:, None]
        forward = in_range(forward_microbatch(ticks, stages))
        # The backward pass replays the forward scan in reverse: backward tick u mirrors
        # forward tick forward_ticks - 1 - u.
        backward = forward[::-1]
        idle = np.full_like(forward, IDLE)
        return ScheduleTable(
            schedule, p, m, np.concatenate([forward, idle]), np.concatenate([idle, backward]), 1
        )
    ticks = np.arange(num_ticks(schedule, p, m))[:, None]
    forward = in_range(forward_microbatch(ticks, stages))
    backward = in_range(backward_microbatch_1f1b(ticks, stages, p))
    return ScheduleTable(schedule, p, m, forward, backward, 2)


def bubble_fraction(table: ScheduleTable) -> float:
    """Idle op slots over all op slots (each stage runs one forward and one backward per
    micro-batch; a GPipe tick holds one slot per stage, a 1F1B tick two)."""
    busy = int(np.sum(table.forward != IDLE) + np.sum(table.backward != IDLE))
    total = table.num_ticks * table.num_stages * table.slots_per_tick
    return 1.0 - busy / total


def gpipe_bubble_formula(num_stages: int, num_microbatches: int) -> float:
    """The GPipe bubble (p-1)/(m+p-1) (Huang et al. 2019)."""
    return (num_stages - 1) / (num_microbatches + num_stages - 1)


def lockstep_1f1b_bubble_formula(num_stages: int, num_microbatches: int) -> float:
    """The bubble of this module's lockstep 1F1B: (2p-2)/(m+2p-2)."""
    return (2 * num_stages - 2) / (num_microbatches + 2 * num_stages - 2)


def max_live_microbatches(table: ScheduleTable) -> np.ndarray:
    """Per stage, the most micro-batches whose forward has run and backward has not (counted
    after each tick's forward, before its backward: what a stage must hold at once)."""
    live = np.zeros(table.num_stages, dtype=int)
    most = np.zeros(table.num_stages, dtype=int)
    for tick in range(table.num_ticks):
        live += table.forward[tick] != IDLE
        most = np.maximum(most, live)
        live -= table.backward[tick] != IDLE
    return most


def stash_size_1f1b(num_stages: int) -> int:
    """Slots of the 1F1B circular activation buffer: the most micro-batches stage 0 holds.

    Micro-batch i goes to slot i % size; it is live from tick i + s to tick i + 2(p-1) - s, and
    micro-batch i + size starts at tick i + size + s, after that, so slots never collide.
    """
    return 2 * num_stages - 1
