"""SeatInventory.lock_best (best available) on a real local Ray, backed by real Postgres."""

from __future__ import annotations

import asyncio

import httpx

from actors.clients import SeatInventoryClient
from domain.best_available import BestLockResult, SeatRequest, unavailable_message
from tests.helpers import create_event

seats = SeatInventoryClient()


async def test_lock_best_chooses_front_and_centre_and_repeats_for_its_holder(
    http: httpx.AsyncClient,
    admin_token: str,
) -> None:
    event = await create_event(http, admin_token, vip=4, general=20)
    event_id = event["id"]
    request = SeatRequest(2, tier="GENERAL")

    first = await seats.lock_best(event_id=event_id, booking_id="bkg_best_1", request=request)

    assert first.ok and len(first.seat_ids) == 2
    seat_map = {
        s["id"]: (r["row"], s["tier"]) for r in event["seatMap"]["rows"] for s in r["seats"]
    }
    rows = {seat_map[s][0] for s in first.seat_ids}
    assert len(rows) == 1 and {seat_map[s][1] for s in first.seat_ids} == {"GENERAL"}
    general_rows = [r["row"] for r in event["seatMap"]["rows"] if r["tier"] == "GENERAL"]
    assert rows == {general_rows[0]}  # the front GENERAL row
    again = await seats.lock_best(event_id=event_id, booking_id="bkg_best_1", request=request)
    assert again == first
    statuses, summary = await seats.snapshot(event_id)
    assert summary.locked == 2 and all(statuses[s] == "LOCKED" for s in first.seat_ids)
    assert await seats.lock_of(event_id=event_id, booking_id="bkg_best_1") == (
        first.seat_ids,
        first.expires_at,
    )


async def test_concurrent_lock_best_never_gives_a_seat_twice_and_says_what_is_left(
    http: httpx.AsyncClient,
    admin_token: str,
) -> None:
    event = await create_event(http, admin_token, vip=10, general=0)
    event_id = event["id"]
    # 8 bookings of 2 VIP seats race for 10 seats; someone holds one more seat by id first.
    assert (
        await seats.lock_with_ttl(
            event_id=event_id,
            booking_id="bkg_by_id",
            seat_ids=(event["seatMap"]["rows"][0]["seats"][0]["id"],),
        )
    ).ok
    results = await asyncio.gather(
        *(
            seats.lock_best(
                event_id=event_id, booking_id=f"bkg_race_{i}", request=SeatRequest(2, tier="VIP")
            )
            for i in range(8)
        )
    )
    held = [s for r in results if r.ok for s in r.seat_ids]
    assert len(held) == len(set(held)), "a seat was granted to two bookings"
    assert all(len(r.seat_ids) == 2 for r in results if r.ok)
    losers = [r for r in results if not r.ok]
    assert losers
    _, summary = await seats.snapshot(event_id)
    assert summary.locked == len(held) + 1
    left = summary.available
    # No pair is left: every loser was told the same, and it is what the inventory shows.
    expected = unavailable_message(tier="VIP", largest_block=min(left, 1), available=left)
    assert {r.message for r in losers} == {expected}
    # Scattered seats are still given when no pair is left.
    if left:
        scattered = await seats.lock_best(
            event_id=event_id,
            booking_id="bkg_scattered",
            request=SeatRequest(left, tier="VIP", together=False),
        )
        assert scattered.ok and not set(scattered.seat_ids) & set(held)
    await asyncio.gather(
        *(seats.release(event_id=event_id, booking_id=f"bkg_race_{i}") for i in range(8))
    )


class _CountingSeats(SeatInventoryClient):
    """The real client, noting how many requests each seat-actor call carried."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    async def lock_best_many(
        self, event_id: str, requests: list[tuple[str, SeatRequest]]
    ) -> list[BestLockResult]:
        self.batches.append(len(requests))
        return await super().lock_best_many(event_id, requests)


async def test_concurrent_best_available_locks_share_seat_actor_calls(
    http: httpx.AsyncClient, admin_token: str
) -> None:
    event = await create_event(http, admin_token, vip=0, general=40)
    counting = _CountingSeats()
    results = await asyncio.gather(
        *(
            counting.lock_best(
                event_id=event["id"], booking_id=f"bkg_share_{i}", request=SeatRequest(2)
            )
            for i in range(12)
        )
    )
    assert all(r.ok for r in results)
    held = [s for r in results for s in r.seat_ids]
    assert len(held) == len(set(held)) == 24
    # Twelve concurrent requests, one event: they travel together, not in twelve calls.
    assert sum(counting.batches) == 12 and len(counting.batches) < 12, counting.batches
