"""`Prefer: wait=N` on the booking routes: requests that wait for a booking to be final.

One Postgres `LISTEN` connection per Gateway replica (opened on the first wait, reconnected when
lost) hears each booking that reaches CONFIRMED or FAILED: the saga's final-status statement
announces its ids on `BOOKING_FINAL_CHANNEL` when it commits, so every replica hears every booking
and wakes only its own waiters, with no query per waiting request. A waiter is one dict entry and
one future, removed when its request ends for any reason (answered, timed out, or cancelled because
the client went away), so a disconnect costs nothing after it.

A notification sent while the listener was down is lost: on reconnecting, every waiter is woken
to read its booking again, and goes back to waiting if it is still PENDING.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, TypeVar

import asyncpg

from domain.bookings import BOOKING_FINAL_CHANNEL

logger = logging.getLogger(__name__)

MAX_WAIT_SECONDS = 10
# How long a request waits for the listener of a replica that has just started (first use).
LISTENER_READY_SECONDS = 2.0
# `wait=N` among other preferences, case-insensitive (RFC 7240 §2; delta-seconds, §4.3).
_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*\"?(\d{1,9})\"?\s*(?=$|[,;\s])", re.IGNORECASE)

T = TypeVar("T")


def requested_wait(prefer: str | None) -> int | None:
    """Seconds asked for by `Prefer: wait=N`, capped at MAX_WAIT_SECONDS; None when absent or not
    understood (an unknown or malformed preference is ignored, RFC 7240 §2)."""
    if not prefer:
        return None
    match = _WAIT.search(prefer)
    if match is None:
        return None
    return min(int(match.group(1)), MAX_WAIT_SECONDS)


class BookingWaiters:
    """The waiting requests of one Gateway replica, keyed by booking id."""

    def __init__(self, database_url: str, *, max_waiters: int, connect_timeout: float) -> None:
        self._database_url = database_url
        self._max_waiters = max_waiters
        self._connect_timeout = connect_timeout
        self._waiting: dict[str, set[asyncio.Future[None]]] = {}
        self._count = 0
        self._listening = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def waiting(self) -> int:
        """Requests waiting now (the `ticketflow_booking_waiters` figure)."""
        return self._count

    async def wait_final(
        self,
        booking_id: str,
        seconds: float,
        read: Callable[[], Awaitable[T]],
        is_final: Callable[[T], bool],
    ) -> T | None:
        """Reads the booking with `read` until `is_final` says so or `seconds` have passed, reading
        again only when it is announced final (or the listener reconnected); returns the last read.
        None when this replica cannot wait now (listener down, too many waiters): the caller
        answers as without the preference."""
        if not await self._ready() or self._count >= self._max_waiters:
            return None
        deadline = asyncio.get_running_loop().time() + seconds
        while True:
            # Registered before the read: an announcement between the two is not missed.
            async with self._watching(booking_id) as woken:
                booking = await read()
                remaining = deadline - asyncio.get_running_loop().time()
                if is_final(booking) or remaining <= 0:
                    return booking
                try:
                    await asyncio.wait_for(woken, remaining)
                except TimeoutError:
                    return await read()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    @contextlib.asynccontextmanager
    async def _watching(self, booking_id: str) -> AsyncIterator[asyncio.Future[None]]:
        woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(booking_id, set()).add(woken)
        self._count += 1
        try:
            yield woken
        finally:
            self._count -= 1
            futures = self._waiting.get(booking_id)
            if futures is not None:
                futures.discard(woken)
                if not futures:
                    del self._waiting[booking_id]

    async def _ready(self) -> bool:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._listen_forever())
        if self._listening.is_set():
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._listening.wait(), LISTENER_READY_SECONDS)
        return self._listening.is_set()

    def _on_final(self, _conn: Any, _pid: int, _channel: str, payload: object) -> None:
        _wake(self._waiting.get(str(payload), ()))

    def _wake_all(self) -> None:
        for futures in self._waiting.values():
            _wake(futures)

    async def _listen_forever(self) -> None:
        while True:
            conn: asyncpg.Connection[Any] | None = None
            try:
                conn = await asyncpg.connect(self._database_url, timeout=self._connect_timeout)
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(BOOKING_FINAL_CHANNEL, self._on_final)
                self._listening.set()
                self._wake_all()  # whatever was announced while not listening is read again
                await lost.wait()
                logger.warning("booking waiters: lost the Postgres listener; reconnecting")
            except Exception as exc:  # noqa: BLE001 - the database may be down; waits fall back meanwhile
                logger.warning("booking waiters: cannot listen (%s)", type(exc).__name__)
            finally:
                self._listening.clear()
                if conn is not None and not conn.is_closed():
                    conn.terminate()
            await asyncio.sleep(1.0)


def _wake(futures: Iterable[asyncio.Future[None]]) -> None:
    for woken in futures:
        if not woken.done():
            woken.set_result(None)
