"""`Prefer: wait=N` in the plain baselines, the usual in-process way: one asyncio event per running
booking, set when its background task ends.

A baseline is one process that runs every booking it accepted, so it needs no listener: the
booking's own task wakes its waiters. An entry lives from the 202 to the booking's end (bounded by
the bookings in flight); a waiter whose client went away is cancelled with its request and leaves
nothing behind.
"""

from __future__ import annotations

import asyncio
import re

MAX_WAIT_SECONDS = 10
# `wait=N` among other preferences, case-insensitive (RFC 7240 §2, §4.3), as TicketFlow reads it.
_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*\"?(\d{1,9})\"?\s*(?=$|[,;\s])", re.IGNORECASE)


def requested_wait(prefer: str | None) -> int | None:
    """Seconds asked for by `Prefer: wait=N`, capped at 10; None when absent or not understood."""
    match = _WAIT.search(prefer or "")
    return None if match is None else min(int(match.group(1)), MAX_WAIT_SECONDS)


def applied(seconds: int) -> dict[str, str]:
    return {"Preference-Applied": f"wait={seconds}", "Vary": "Prefer"}


class BookingWaiters:
    """Running bookings' end events, by booking id."""

    def __init__(self) -> None:
        self._ends: dict[str, asyncio.Event] = {}

    def __len__(self) -> int:
        return len(self._ends)

    def started(self, booking_id: str) -> None:
        self._ends[booking_id] = asyncio.Event()

    def ended(self, booking_id: str) -> None:
        end = self._ends.pop(booking_id, None)
        if end is not None:
            end.set()

    def end_of(self, booking_id: str) -> asyncio.Event | None:
        """The booking's end event while it runs here; take it *before* reading the booking, so
        that an end between the read and the wait is not missed."""
        return self._ends.get(booking_id)


async def wait_for_end(end: asyncio.Event | None, seconds: float) -> bool:
    """Whether the booking ended within `seconds` (at once when it is not running here)."""
    if end is None:
        return True
    try:
        await asyncio.wait_for(end.wait(), seconds)
    except TimeoutError:
        return False
    return True
