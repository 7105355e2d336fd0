"""`Prefer: wait` waiters, woken by the final-status NOTIFY of a real Postgres."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import pytest

from api.booking_waiters import BookingWaiters
from domain.bookings import BOOKING_FINAL_CHANNEL
from tests.waiting import wait_until


class Bookings:
    """What a waiter reads: a status per booking id, and how many reads were made."""

    def __init__(self) -> None:
        self.status: dict[str, str] = {}
        self.reads = 0

    def reader(self, booking_id: str) -> Any:
        async def read() -> str:
            self.reads += 1
            return self.status.get(booking_id, "PENDING")

        return read


def final(status: str) -> bool:
    return status != "PENDING"


async def announce(url: str, *booking_ids: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        for booking_id in booking_ids:
            await conn.execute("SELECT pg_notify($1, $2)", BOOKING_FINAL_CHANNEL, booking_id)
    finally:
        await conn.close()


@pytest.fixture
async def waiters(database_url: str) -> Any:
    w = BookingWaiters(database_url, max_waiters=100, connect_timeout=5.0)
    yield w
    await w.close()


async def test_a_waiter_is_woken_by_its_bookings_announcement_only(
    waiters: BookingWaiters, database_url: str
) -> None:
    bookings = Bookings()
    mine = asyncio.create_task(waiters.wait_final("bkg_a", 10, bookings.reader("bkg_a"), final))
    others = [
        asyncio.create_task(waiters.wait_final("bkg_b", 10, bookings.reader("bkg_b"), final))
        for _ in range(3)
    ]
    await wait_until(
        lambda: waiters.waiting,
        until=lambda n: n == 4,
        timeout=5,
        interval=0.01,
        what="four waiters",
    )
    started = time.monotonic()
    bookings.status["bkg_a"] = "CONFIRMED"
    await announce(database_url, "bkg_a")
    assert await asyncio.wait_for(mine, 5) == "CONFIRMED"
    assert time.monotonic() - started < 2.0
    assert not any(t.done() for t in others), "another booking's announcement woke a waiter"
    bookings.status["bkg_b"] = "FAILED"
    await announce(database_url, "bkg_b")
    assert await asyncio.gather(*others) == ["FAILED"] * 3
    assert waiters.waiting == 0
    # One read each on arrival and one after the wake-up: no polling while waiting.
    assert bookings.reads == 8


async def test_a_booking_already_final_is_answered_without_waiting(waiters: BookingWaiters) -> None:
    bookings = Bookings()
    bookings.status["bkg_done"] = "CONFIRMED"
    started = time.monotonic()
    assert (
        await waiters.wait_final("bkg_done", 10, bookings.reader("bkg_done"), final) == "CONFIRMED"
    )
    assert time.monotonic() - started < 2.0 and bookings.reads == 1


async def test_a_waiter_gives_up_after_its_seconds_with_a_fresh_read(
    waiters: BookingWaiters,
) -> None:
    bookings = Bookings()
    started = time.monotonic()
    assert await waiters.wait_final("bkg_slow", 1, bookings.reader("bkg_slow"), final) == "PENDING"
    assert 0.9 <= time.monotonic() - started < 3.0
    assert bookings.reads == 2 and waiters.waiting == 0


async def test_a_request_that_goes_away_leaves_nothing_behind(waiters: BookingWaiters) -> None:
    bookings = Bookings()
    tasks = [
        asyncio.create_task(
            waiters.wait_final(f"bkg_{i % 3}", 10, bookings.reader(f"bkg_{i % 3}"), final)
        )
        for i in range(30)
    ]
    await wait_until(
        lambda: waiters.waiting,
        until=lambda n: n == 30,
        timeout=5,
        interval=0.01,
        what="thirty waiters",
    )
    for task in tasks:
        task.cancel()  # what Serve does to a request whose client disconnected
    await asyncio.gather(*tasks, return_exceptions=True)
    assert waiters.waiting == 0
    assert not waiters._waiting, "a cancelled waiter left its entry"


async def test_past_the_cap_a_request_is_answered_without_waiting(database_url: str) -> None:
    capped = BookingWaiters(database_url, max_waiters=2, connect_timeout=5.0)
    bookings = Bookings()
    try:
        held = [
            asyncio.create_task(capped.wait_final("bkg_x", 10, bookings.reader("bkg_x"), final))
            for _ in range(2)
        ]
        await wait_until(
            lambda: capped.waiting,
            until=lambda n: n == 2,
            timeout=5,
            interval=0.01,
            what="two waiters",
        )
        assert await capped.wait_final("bkg_x", 10, bookings.reader("bkg_x"), final) is None
        for task in held:
            task.cancel()
        await asyncio.gather(*held, return_exceptions=True)
    finally:
        await capped.close()


async def test_without_a_database_a_request_is_answered_without_waiting() -> None:
    unreachable = BookingWaiters(
        "postgresql://postgres@127.0.0.1:1/none", max_waiters=10, connect_timeout=0.5
    )
    try:
        started = time.monotonic()
        assert await unreachable.wait_final("bkg_y", 10, Bookings().reader("bkg_y"), final) is None
        assert time.monotonic() - started < 4.0
    finally:
        await unreachable.close()


async def test_a_lost_listener_wakes_its_waiters_to_read_again_and_listens_anew(
    waiters: BookingWaiters,
    database_url: str,
) -> None:
    bookings = Bookings()
    task = asyncio.create_task(waiters.wait_final("bkg_z", 10, bookings.reader("bkg_z"), final))
    await wait_until(
        lambda: waiters.waiting, until=lambda n: n == 1, timeout=5, interval=0.01, what="one waiter"
    )
    # The saga finishes while the listener is gone: its announcement is lost with the connection.
    bookings.status["bkg_z"] = "CONFIRMED"
    conn = await asyncpg.connect(database_url)
    try:
        killed = await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND query LIKE 'LISTEN%'"
        )
    finally:
        await conn.close()
    assert killed >= 1
    assert await asyncio.wait_for(task, 6) == "CONFIRMED"
    # Listening again: a later waiter is woken by its announcement.
    later = asyncio.create_task(waiters.wait_final("bkg_w", 10, bookings.reader("bkg_w"), final))
    await wait_until(
        lambda: waiters.waiting,
        until=lambda n: n == 1,
        timeout=5,
        interval=0.01,
        what="the later waiter",
    )
    bookings.status["bkg_w"] = "FAILED"
    await announce(database_url, "bkg_w")
    assert await asyncio.wait_for(later, 5) == "FAILED"
