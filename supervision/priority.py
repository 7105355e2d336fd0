"""Lowering a process's CPU priority, for work that must yield to the booking path.

The waiting room's place reads run in their own Serve replicas (serve_app.PlaceReader). On a
machine that also runs the Gateway, the seat actors and the sagas, a burst of looks competes with
the admitted buyers' bookings for the same cores; a look that waits a few milliseconds longer
harms nobody (the buyer was told when to look, not promised an answer time), a booking that waits
does. So the place readers run at a lower priority (`TICKETFLOW_PLACE_READER_NICE`).

Linux keeps a nice value per thread, not per process: `os.nice` in one thread leaves the event
loop and server threads Ray and uvicorn already started as they were. Every thread is lowered
instead; threads started later inherit the value of the thread that starts them.
"""

from __future__ import annotations

import os
from pathlib import Path

_TASKS = Path("/proc/self/task")


def lower_priority(niceness: int) -> int:
    """Lowers every thread of this process by `niceness` (0: nothing). Returns how many threads
    were lowered (the whole process counts as one where threads have no nice value of their own)."""
    if niceness <= 0:
        return 0
    if not _TASKS.is_dir():
        os.nice(niceness)
        return 1
    lowered = 0
    for task in _TASKS.iterdir():
        tid = int(task.name)
        try:
            current = os.getpriority(os.PRIO_PROCESS, tid)
            os.setpriority(os.PRIO_PROCESS, tid, min(19, current + niceness))
        except ProcessLookupError:  # the thread ended meanwhile
            continue
        lowered += 1
    return lowered
