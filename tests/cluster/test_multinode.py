"""The app on a three-node Ray cluster: seat actors spread over the nodes, and a worker node lost in
the middle of an on-sale costs nothing: its seat actors restart on another node and rebuild from
Postgres, no seat is sold twice, no booking is left PENDING, no money is kept for a failed booking.

Run on their own (see conftest.py): python -m pytest -m cluster tests/cluster
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio

from tests.cluster.conftest import RunningCluster
from tests.helpers import ADMIN, book, create_event, create_venue, login, new_user, wait_final
from tests.waiting import WaitedTooLong, wait_until

pytestmark = pytest.mark.cluster

EVENTS = 6
SEATS_PER_EVENT = 20
BUYERS = 6
# Time bounds: the cluster comes up in 10-30 s; every wait below has its own timeout (bookings
# final within 60 s of the node loss), so a hung run fails in about two minutes, not never.


def _actor_info(name: str) -> dict[str, Any]:
    """GCS's record of a named actor: state, node, restarts (no dashboard needed)."""
    import ray
    from ray._private import state

    from actors import names

    handle = ray.get_actor(name, namespace=names.NAMESPACE)
    info = state.actors(actor_id=handle._actor_id.hex())
    return {
        "state": info["State"],
        "node_id": info["Address"]["NodeID"],
        "restarts": info.get("NumRestarts", 0),
    }


async def seat_actor_nodes(event_ids: list[str]) -> dict[str, str]:
    """event id -> node id of its (alive) seat actor."""
    from actors import names

    return {
        e: (await asyncio.to_thread(_actor_info, names.seat_actor_name(e)))["node_id"]
        for e in event_ids
    }


def seats_of(event: dict[str, Any]) -> list[str]:
    return [s["id"] for row in event["seatMap"]["rows"] for s in row["seats"]]


class Sale:
    """Module state shared by the tests, in order: the events, the buyers, and the bookings made."""

    admin: str
    events: list[dict[str, Any]]
    buyers: list[str]
    bookings: dict[str, tuple[str, str, list[str]]]  # booking id -> (token, event id, seats)

    def __init__(self) -> None:
        self.bookings = {}
        self.started = time.monotonic()


@pytest_asyncio.fixture(scope="module")
async def sale(cluster_http: httpx.AsyncClient) -> Sale:
    s = Sale()
    s.admin = await login(cluster_http, *ADMIN)
    venue = await create_venue(cluster_http, s.admin, capacity=1000)
    s.events = [
        await create_event(
            cluster_http,
            s.admin,
            venue_id=venue["id"],
            vip=0,
            general=SEATS_PER_EVENT,
            name=f"Cluster show {i}",
        )
        for i in range(EVENTS)
    ]
    s.buyers = [(await new_user(cluster_http))[0] for _ in range(BUYERS)]
    return s


async def book_and_record(
    http: httpx.AsyncClient, sale: Sale, token: str, event_id: str, seats: list[str]
) -> str:
    r = await book(http, token, event_id, seats)
    assert r.status_code == 202, r.text
    booking_id = str(r.json()["bookingId"])
    sale.bookings[booking_id] = (token, event_id, seats)
    return booking_id


async def test_app_runs_on_three_nodes(cluster_http: httpx.AsyncClient) -> None:
    import ray

    alive = [n for n in ray.nodes() if n["Alive"]]
    assert len(alive) == 3
    r = await cluster_http.get("/health")
    assert r.status_code == 200, r.text
    assert r.headers["x-request-id"].startswith(
        "req_"
    )  # the proxy middleware runs in the cluster too


async def test_seat_actors_spread_over_the_nodes(
    ray_cluster: RunningCluster, cluster_http: httpx.AsyncClient, sale: Sale
) -> None:
    # Each event's seat actor was started by its creation or its first booking, on the emptiest node.
    first = [
        await book_and_record(
            cluster_http, sale, sale.buyers[i % BUYERS], e["id"], [seats_of(e)[0]]
        )
        for i, e in enumerate(sale.events)
    ]
    finals = await asyncio.gather(
        *(wait_final(cluster_http, sale.bookings[b][0], b, timeout=45) for b in first)
    )
    assert [f["status"] for f in finals] == ["CONFIRMED"] * EVENTS, finals
    nodes = await seat_actor_nodes([e["id"] for e in sale.events])
    per_node = Counter(nodes.values())
    worker_ids = {ray_cluster.node_id(w) for w in ray_cluster.workers}
    assert len(per_node) >= 2, f"seat actors not spread: {per_node}"
    assert set(per_node) & worker_ids, "no seat actor on a worker node"


async def test_losing_a_worker_mid_sale_sells_every_seat_once(
    ray_cluster: RunningCluster,
    cluster_http: httpx.AsyncClient,
    cluster_db: asyncpg.Pool,
    sale: Sale,
) -> None:
    event_ids = [e["id"] for e in sale.events]
    nodes_before = await seat_actor_nodes(event_ids)
    victim = max(
        ray_cluster.workers,
        key=lambda w: sum(n == ray_cluster.node_id(w) for n in nodes_before.values()),
    )
    victim_id = ray_cluster.node_id(victim)
    victim_events = [e for e, n in nodes_before.items() if n == victim_id]
    assert victim_events, nodes_before

    # The sale: per event, overlapping pairs of seats, so buyers really compete for seats.
    rng = random.Random(7)
    wanted: list[tuple[str, str, list[str]]] = []
    for event in sale.events:
        seats = seats_of(event)[1:]
        for i in range(0, len(seats) - 1):
            wanted.append((rng.choice(sale.buyers), event["id"], [seats[i], seats[i + 1]]))
    rng.shuffle(wanted)
    cut = len(wanted) // 3  # a third before the node dies, the rest while and after it does

    gate = asyncio.Semaphore(16)

    async def place(token: str, event_id: str, seats: list[str]) -> str:
        async with gate:
            return await book_and_record(cluster_http, sale, token, event_id, seats)

    before = await asyncio.gather(*(place(*w) for w in wanted[:cut]))

    # Kill the node while buyers hold seats of its events (locked, card being charged): the case
    # where a restarted seat actor must restore live locks from Postgres, not just sold seats.
    async def holding_now() -> list[asyncpg.Record]:
        return await cluster_db.fetch(
            "SELECT id FROM bookings WHERE status = 'PENDING' AND event_id = ANY($1)"
            " AND saga_step IN ('SEATS_LOCKED', 'CHARGING', 'CHARGED')",
            victim_events,
        )

    try:
        holding = await wait_until(
            holding_now,
            until=lambda rows: len(rows) >= 2,
            timeout=10,
            interval=0.05,
            what="two bookings holding seats of the doomed node's events",
        )
    except WaitedTooLong as fewer:
        holding = fewer.last  # one will do
    assert holding, "no booking held seats of the lost node's events when it died"
    in_flight = len(holding)
    killed_at = time.monotonic()
    killing = asyncio.create_task(asyncio.to_thread(ray_cluster.cluster.remove_node, victim, False))
    after = await asyncio.gather(*(place(*w) for w in wanted[cut:]))
    await killing
    ids = [*before, *after]
    finals = await asyncio.gather(
        *(wait_final(cluster_http, sale.bookings[b][0], b, timeout=60) for b in ids)
    )
    settled_in = time.monotonic() - killed_at
    print(
        f"\n{len(ids)} bookings ({in_flight} holding seats of the lost node's events when it died) "
        f"all final {settled_in:.1f} s after the loss: {Counter(f['status'] for f in finals)}",
        flush=True,
    )

    # 1. Nothing stuck: every booking of every event is final.
    pending = await cluster_db.fetchval(
        "SELECT count(*) FROM bookings WHERE status = 'PENDING' AND event_id = ANY($1)", event_ids
    )
    assert pending == 0
    reasons = Counter(f.get("failureReason") for f in finals if f["status"] == "FAILED")
    assert set(reasons) <= {"SEATS_UNAVAILABLE", "LOCK_EXPIRED"}, (
        reasons
    )  # never INTERNAL_ERROR for a node loss

    # Buyers holding seats when the node died keep them: the restarted actor restored their locks.
    held_outcome = {b["id"]: b["status"] for b in finals if b["id"] in {r["id"] for r in holding}}
    assert set(held_outcome.values()) == {"CONFIRMED"}, held_outcome

    # 2. No seat sold twice, and the sales are exactly the confirmed bookings' seats.
    doubles = await cluster_db.fetch(
        "SELECT event_id, seat_id, count(*) FROM seat_sales WHERE released_at IS NULL AND event_id = ANY($1)"
        " GROUP BY event_id, seat_id HAVING count(*) > 1",
        event_ids,
    )
    assert doubles == []
    rows = await cluster_db.fetch(
        "SELECT id, event_id, seat_ids, status FROM bookings WHERE event_id = ANY($1)", event_ids
    )
    sales = await cluster_db.fetch(
        "SELECT event_id, seat_id, booking_id FROM seat_sales WHERE released_at IS NULL AND event_id = ANY($1)",
        event_ids,
    )
    sold = {(r["event_id"], r["seat_id"]): r["booking_id"] for r in sales}
    confirmed = {
        (r["event_id"], seat): r["id"]
        for r in rows
        if r["status"] == "CONFIRMED"
        for seat in r["seat_ids"]
    }
    assert sum(len(r["seat_ids"]) for r in rows if r["status"] == "CONFIRMED") == len(
        confirmed
    )  # disjoint
    assert sold == confirmed
    assert len(confirmed) >= EVENTS * 2  # the sale really sold something on every event

    # 3. No money kept for a seat not delivered: a failed booking has no successful payment.
    kept = await cluster_db.fetch(
        "SELECT b.id FROM bookings b JOIN payments p ON p.booking_id = b.id"
        " WHERE b.event_id = ANY($1) AND b.status = 'FAILED' AND p.status = 'SUCCESS'",
        event_ids,
    )
    assert kept == []
    charged = await cluster_db.fetch(
        "SELECT b.id, count(*) FILTER (WHERE p.status = 'SUCCESS') AS ok FROM bookings b"
        " JOIN payments p ON p.booking_id = b.id WHERE b.event_id = ANY($1) AND b.status = 'CONFIRMED' GROUP BY b.id",
        event_ids,
    )
    assert all(r["ok"] == 1 for r in charged) and len(charged) == sum(
        r["status"] == "CONFIRMED" for r in rows
    )

    # 4. The lost node's seat actors live again, elsewhere, rebuilt from Postgres: their seat map
    #    shows exactly the sold seats as RESERVED.
    for event_id in victim_events:
        name = f"seat-inventory:{event_id}"
        info = await wait_until(
            lambda name=name: asyncio.to_thread(_actor_info, name),
            until=lambda info: info["state"] == "ALIVE",
            timeout=60,
            interval=0.5,
            what=f"the seat actor of {event_id} to be ALIVE again",
        )
        assert info["node_id"] != victim_id and info["restarts"] >= 1, info
    nodes_after = await seat_actor_nodes(event_ids)
    assert victim_id not in nodes_after.values()
    for event_id in event_ids:
        r = await cluster_http.get(f"/api/inventory/events/{event_id}/seats")
        assert r.status_code == 200, r.text
        reserved = {s["id"] for s in r.json()["seats"] if s["status"] == "RESERVED"}
        assert reserved == {seat for (e, seat) in confirmed if e == event_id}, event_id
        assert r.json()["summary"]["locked"] == 0

    # 5. The sale goes on: a sold seat is refused, a free one sells.
    event_id = victim_events[0]
    taken = next(seat for (e, seat) in confirmed if e == event_id)
    free = next(
        seat
        for seat in seats_of(next(e for e in sale.events if e["id"] == event_id))
        if (event_id, seat) not in confirmed
    )
    token = sale.buyers[0]
    refused = await wait_final(
        cluster_http,
        token,
        await book_and_record(cluster_http, sale, token, event_id, [taken]),
        timeout=30,
    )
    assert (refused["status"], refused.get("failureReason")) == ("FAILED", "SEATS_UNAVAILABLE")
    sold_now = await wait_final(
        cluster_http,
        token,
        await book_and_record(cluster_http, sale, token, event_id, [free]),
        timeout=30,
    )
    assert sold_now["status"] == "CONFIRMED"
    print(f"sale phase took {time.monotonic() - sale.started:.1f} s", flush=True)
