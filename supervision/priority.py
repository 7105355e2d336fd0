"""Lowering a process's CPU priority, for work that must yield to the booking path: the waiting
room's place readers (`set_priority`) and the notifier's email delivery (`lower_niceness`).

The waiting room's place reads run in their own Serve replicas (serve_app.PlaceReader). On a
machine that also runs the Gateway, the seat actors and the sagas, a burst of looks competes with
the admitted buyers' bookings for the same cores; a look that waits a few milliseconds longer
harms nobody (the buyer was told when to look, not promised an answer time), a booking that waits
does. So the place readers run at a lower priority (`TICKETFLOW_PLACE_READER_PRIORITY`):

- `idle` (the default): Linux's SCHED_IDLE. The threads run on CPU that nothing else wants, and a
  booking's thread that wakes takes the core from them at once. A nice value only weighs the
  shares: a thread at nice 19 still holds a core for its slice while a booking waits. Where there
  is no SCHED_IDLE, nice 19.
- `low`: nice +10 (Ray already starts its workers at nice 15, so this ends at 19).
- `normal`: as every other worker.

Linux keeps the policy and the nice value per thread, not per process: set in one thread, it
leaves the event loop and server threads that Ray and uvicorn already started as they were. Every
thread is changed instead; threads started later inherit it from the thread that starts them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Literal

Priority = Literal["idle", "low", "normal"]
PRIORITIES: tuple[Priority, ...] = ("idle", "low", "normal")
LOW_NICENESS = 10
_TASKS = Path("/proc/self/task")


def set_priority(priority: Priority) -> int:
    """Gives every thread of this process `priority`. Returns how many threads were changed
    (the whole process counts as one where threads have no priority of their own)."""
    if priority == "normal":
        return 0
    if priority == "idle" and hasattr(os, "SCHED_IDLE"):
        idle = os.sched_param(0)
        return _each_thread(lambda tid: os.sched_setscheduler(tid, os.SCHED_IDLE, idle))
    return lower_niceness(19 if priority == "idle" else LOW_NICENESS)


def lower_niceness(increment: int) -> int:
    """Adds `increment` to the nice value of every thread of this process (at most 19; lowering
    needs no privilege). Returns how many threads were changed."""
    if increment <= 0:
        return 0
    return _each_thread(
        lambda tid: os.setpriority(
            os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + increment)
        )
    )


def _each_thread(change: Callable[[int], None]) -> int:
    if not _TASKS.is_dir():
        change(0)
        return 1
    changed = 0
    for task in _TASKS.iterdir():
        try:
            change(int(task.name))
        except ProcessLookupError:  # the thread ended meanwhile
            continue
        changed += 1
    return changed
