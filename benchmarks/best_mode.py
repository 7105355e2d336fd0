"""The on-sale benchmark's best-available mode (`--pick best`) and `--wait`: what a buyer asks for,
and whether a SEATS_UNAVAILABLE answer was deserved.

In best mode a buyer names no seats: it asks for a random quantity (1-4, together), and the server
chooses. A refusal is then either deserved (no block of that many adjacent seats was AVAILABLE)
or a fault of the server's choosing (it refused while the inventory still showed a block that
fits: the issue's "unavailable while enough", target 0). The benchmark decides which from an
inventory read that *started after* the refusal was received: while no seat is ever released
(no declined cards, no expired locks), AVAILABLE seats only become LOCKED or RESERVED, so a block
AVAILABLE after the refusal was AVAILABLE when the server decided. With `--decline-fraction` a
released seat can make a deserved refusal look undeserved; the report says so.

Reads are shared: refusals that arrive while a read is waiting to start join it, so a burst of
refusals at the end of a sale costs one inventory read at a time, not one each.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

# The best mode: each attempt asks for 1-4 seats side by side.
BEST_QUANTITIES = (1, 4)
# `Prefer: wait=N` as `--wait` sends it (the API's maximum).
PREFER_WAIT_SECONDS = 10
PREFER_WAIT = {"Prefer": f"wait={PREFER_WAIT_SECONDS}"}


@dataclass(frozen=True)
class InventorySnapshot:
    """What the inventory route showed: counts and the longest run of adjacent AVAILABLE seats."""

    available: int
    locked: int
    largest_block: int

    def fits(self, quantity: int, *, together: bool) -> bool:
        """Whether a request for `quantity` seats (any tier) could have been served."""
        return (self.largest_block if together else self.available) >= quantity

    @property
    def sold_out(self) -> bool:
        return self.available == 0 and self.locked == 0


def largest_block(seats: Iterable[Mapping[str, Any]]) -> int:
    """The longest run of AVAILABLE seats with consecutive numbers in one row and one tier (the
    API's adjacency; docs/best-available.md)."""
    numbers: dict[tuple[str, str], list[int]] = {}
    for seat in seats:
        if seat.get("status") == "AVAILABLE":
            numbers.setdefault((str(seat["row"]), str(seat.get("tier"))), []).append(
                int(seat["number"])
            )
    best = 0
    for row in numbers.values():
        row.sort()
        run = 0
        previous = None
        for number in row:
            run = run + 1 if previous is not None and number == previous + 1 else 1
            previous = number
            best = max(best, run)
    return best


def snapshot_of(body: Any) -> InventorySnapshot | None:
    """The snapshot of an inventory route's answer (None when it is not one)."""
    if not isinstance(body, dict) or not isinstance(body.get("summary"), dict):
        return None
    summary = body["summary"]
    return InventorySnapshot(
        available=int(summary.get("available", 0)),
        locked=int(summary.get("locked", 0)),
        largest_block=largest_block(body.get("seats") or ()),
    )


class FreshReads:
    """`fresh()` returns the result of a read that started after the call: callers that arrive
    while a read is queued share it; one read runs at a time."""

    def __init__(self, read: Callable[[], Awaitable[InventorySnapshot | None]]) -> None:
        self._read = read
        self._running = asyncio.Lock()
        self._queued: asyncio.Future[InventorySnapshot | None] | None = None
        self.reads = 0

    async def fresh(self) -> InventorySnapshot | None:
        if self._queued is not None:
            # Queued behind the running read, so it starts after this call: share it.
            return await asyncio.shield(self._queued)
        queued = self._queued = asyncio.get_running_loop().create_future()
        async with self._running:
            self._queued = None  # from here on, later callers need a read that starts later
            self.reads += 1
            try:
                result = await self._read()
            except asyncio.CancelledError:
                queued.cancel()
                raise
            except Exception as exc:
                queued.set_exception(exc)
                queued.exception()  # retrieved: the callers that shared it re-raise their own
                raise
            queued.set_result(result)
            return result
