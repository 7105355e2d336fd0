"""More events than the per-node cap of live seat actors: the cap holds and every event sells."""

from __future__ import annotations

import httpx
import ray

from actors.clients import DirectoryClient
from actors.names import NAMESPACE, seat_actor_name
from tests.helpers import book_and_wait, create_event, create_venue, new_user
from tests.waiting import wait_until


def _live_seat_actors(event_ids: list[str]) -> list[str]:
    live = []
    for event_id in event_ids:
        try:
            ray.get_actor(seat_actor_name(event_id), namespace=NAMESPACE)
            live.append(event_id)
        except ValueError:
            pass
    return live


async def test_cap_holds_and_every_event_sells(
    http: httpx.AsyncClient, admin_token: str, app_env: dict[str, str]
) -> None:
    cap = int(app_env["TICKETFLOW_SEAT_ACTORS_PER_NODE"])
    venue = await create_venue(http, admin_token)
    events = [
        (await create_event(http, admin_token, venue_id=venue["id"], vip=0, general=3))["id"]
        for _ in range(cap + 3)
    ]
    token, _ = await new_user(http)
    for event_id in events:
        booking = await book_and_wait(http, token, event_id, ["seat_A1"])
        assert booking["status"] == "CONFIRMED", booking
    await wait_until(
        lambda: _live_seat_actors(events),
        until=lambda live: len(live) <= cap,
        timeout=15,
        interval=0.5,
        what=f"at most {cap} live seat actors (value: the events whose actor lives)",
    )
    directory = await DirectoryClient().live()
    assert len(set(directory) & set(events)) <= cap
    # A retired event's actor comes back on demand and still knows what it sold.
    first = events[0]
    again = await book_and_wait(http, token, first, ["seat_A1"])
    assert again["status"] == "FAILED" and again["failureReason"] == "SEATS_UNAVAILABLE"
    assert (await book_and_wait(http, token, first, ["seat_A2"]))["status"] == "CONFIRMED"
