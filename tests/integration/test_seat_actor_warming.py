"""Seat actors are started before buyers arrive (issue 14): at an event's creation and when the
warmer starts, always within the per-node cap."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import ray

from actors.clients import DirectoryClient, SeatInventoryClient
from actors.names import NAMESPACE, WARMER_ACTOR, seat_actor_name
from tests.helpers import auth, book_and_wait, create_event, create_venue, iso, new_user
from tests.waiting import wait_until


def _seat_actor(event_id: str) -> Any:
    try:
        return ray.get_actor(seat_actor_name(event_id), namespace=NAMESPACE)
    except ValueError:
        return None


async def _wait_for_free_slots(cap: int, free: int) -> None:
    """Warming only takes free slots: earlier tests' seat actors (some holding locks, which never
    retire idle) are retired here until `free` slots are. Harmless: their state is in Postgres,
    and a retired actor comes back on its event's next call."""
    live = await DirectoryClient().live()
    for event_id in list(live)[: max(0, len(live) - (cap - free))]:
        await SeatInventoryClient().retire(event_id)
    await wait_until(
        DirectoryClient().live,
        until=lambda now_live: len(now_live) <= cap - free,
        timeout=30,
        interval=0.5,
        what=f"at least {free} free seat-actor slots (value: the live seat actors)",
    )


async def test_a_new_events_seat_actor_is_warm_before_the_first_booking(
    http: httpx.AsyncClient, admin_token: str, app_env: dict[str, str]
) -> None:
    await _wait_for_free_slots(int(app_env["TICKETFLOW_SEAT_ACTORS_PER_NODE"]), 1)
    event = await create_event(http, admin_token, vip=2, general=8)
    # Nobody has booked or read the inventory: only the creation can have started it.
    actor = await wait_until(
        lambda: _seat_actor(event["id"]),
        timeout=30,
        what=f"the seat actor of {event['id']} to be started by its creation",
    )
    summary = await actor.warm.remote()
    assert summary.available == 10
    token, _ = await new_user(http)
    booking = await book_and_wait(http, token, event["id"], ["seat_A1"])
    assert booking["status"] == "CONFIRMED", booking


async def test_the_warmer_warms_the_events_on_sale_when_it_starts(
    http: httpx.AsyncClient, admin_token: str, app_env: dict[str, str]
) -> None:
    cap = int(app_env["TICKETFLOW_SEAT_ACTORS_PER_NODE"])
    venue = await create_venue(http, admin_token)
    # Sooner than every other test's events: the warmer takes the soonest first.
    event = await create_event(
        http, admin_token, venue_id=venue["id"], vip=0, general=4, starts_in=timedelta(minutes=30)
    )
    # Whatever its creation warmed goes: the warmer must bring it back by itself.
    await _retire(event["id"])
    await _wait_for_free_slots(cap, 1)
    # A crash of the warmer: its restart is a start-up, which warms the events on sale.
    warmer = ray.get_actor(WARMER_ACTOR, namespace=NAMESPACE)
    ray.kill(warmer, no_restart=False)
    await wait_until(
        lambda: _seat_actor(event["id"]),
        timeout=60,
        interval=0.5,
        what=f"the restarted warmer to start the seat actor of {event['id']}",
    )


async def _retire(event_id: str) -> None:
    await SeatInventoryClient().retire(event_id)
    await wait_until(
        lambda: _seat_actor(event_id),
        until=lambda actor: actor is None,
        timeout=15,
        what=f"the seat actor of {event_id} to be gone",
    )


async def test_a_sales_opening_is_warmed_ahead_and_kept_warm_while_hot(
    http: httpx.AsyncClient, admin_token: str, app_env: dict[str, str]
) -> None:
    cap = int(app_env["TICKETFLOW_SEAT_ACTORS_PER_NODE"])
    idle = float(app_env["TICKETFLOW_SEAT_ACTOR_IDLE_SECONDS"])
    lead = float(app_env["TICKETFLOW_SEAT_ACTOR_WARM_LEAD_SECONDS"])
    await _wait_for_free_slots(cap, 1)
    opens = datetime.now(UTC) + timedelta(days=1)
    event = await create_event(http, admin_token, vip=0, general=6, salesStartAt=iso(opens))
    # Its sale opens tomorrow: neither the creation nor the warmer starts an actor yet.
    await asyncio.sleep(2)
    assert _seat_actor(event["id"]) is None
    # The organiser brings the opening forward to within the warmer's lead.
    soon = datetime.now(UTC) + timedelta(seconds=lead / 2)
    r = await http.put(
        f"/api/events/{event['id']}", headers=auth(admin_token), json={"salesStartAt": iso(soon)}
    )
    assert r.status_code == 200, r.text
    actor = await wait_until(
        lambda: _seat_actor(event["id"]),
        timeout=30,
        what=f"the warmer to start the seat actor of {event['id']} ahead of its opening",
    )
    first = actor._actor_id.hex()
    # Nobody calls it for longer than the idle timeout: the hot sale keeps it all the same.
    await asyncio.sleep(idle * 1.5)
    again = _seat_actor(event["id"])
    assert again is not None and again._actor_id.hex() == first, "the hot sale's actor retired"
