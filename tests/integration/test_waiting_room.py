"""The waiting room against a real Redis (REDIS_URL, else 127.0.0.1:6379), without Ray.

Each test works under a key prefix of its own and deletes only its own keys afterwards: the Redis
is shared with other test runs (never FLUSHDB).
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import secrets
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from domain.admission import AdmissionPacer
from storage.waiting_room import (
    LATE_BASE,
    PlaceStatus,
    QueueClosed,
    QueueState,
    WaitingRoom,
    connect,
    event_of_ticket,
)

REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
T0 = 1_800_000_000.0


@pytest_asyncio.fixture
async def prefix() -> AsyncIterator[str]:
    name = f"tftest:wr:{secrets.token_hex(6)}"
    yield name
    client = aioredis.from_url(REDIS_URL)
    try:
        doomed = [key async for key in client.scan_iter(match=f"{name}:*", count=1000)]
        for start in range(0, len(doomed), 500):
            await client.delete(*doomed[start : start + 500])
    finally:
        await client.aclose()


@pytest_asyncio.fixture
async def client() -> AsyncIterator[aioredis.Redis]:
    redis = aioredis.from_url(REDIS_URL)
    yield redis
    await redis.aclose()


@pytest.fixture
def room(client: aioredis.Redis, prefix: str) -> WaitingRoom:
    return WaitingRoom(client, prefix=prefix)


def _event() -> str:
    return f"evnt_{secrets.token_hex(8)}"


def _users(n: int) -> list[str]:
    return [f"usr_{i:04d}_{secrets.token_hex(3)}" for i in range(n)]


async def test_a_user_has_one_place_per_event(room: WaitingRoom) -> None:
    event, other_event = _event(), _event()
    first = await room.join(event_id=event, user_id="usr_a", now=T0)
    again = await room.join(event_id=event, user_id="usr_a", now=T0 + 5)
    assert first.new and not again.new
    assert again.ticket == first.ticket
    assert again.joined_at == first.joined_at == T0
    assert event_of_ticket(first.ticket) == event
    # Twenty concurrent joins of one user (a double click, replicas racing): still one place.
    racing = await asyncio.gather(*(room.join(event_id=event, user_id="usr_b") for _ in range(20)))
    assert len({t.ticket for t in racing}) == 1
    assert sum(t.new for t in racing) == 1
    # Another event is another room.
    elsewhere = await room.join(event_id=other_event, user_id="usr_a")
    assert elsewhere.new and elsewhere.ticket != first.ticket
    place = await room.place(first.ticket)
    assert place is not None and place.waiting == 2


async def test_before_the_opening_nobody_has_a_position(room: WaitingRoom) -> None:
    event = _event()
    tickets = [await room.join(event_id=event, user_id=u) for u in _users(3)]
    for t in tickets:
        place = await room.place(t.ticket)
        assert place is not None
        assert (place.status, place.queue_state) == (PlaceStatus.WAITING, QueueState.WAITING)
        assert place.position is None and place.ahead is None
        assert place.waiting == 3
    assert await room.admit_next(event_id=event, n=3) == []  # not open: nobody admitted


async def test_after_the_opening_later_arrivals_queue_in_arrival_order(room: WaitingRoom) -> None:
    event = _event()
    early = {(await room.join(event_id=event, user_id=u, now=T0)).ticket for u in _users(5)}
    assert await room.open(event_id=event, now=T0 + 10) == T0 + 10
    assert await room.open(event_id=event, now=T0 + 99) == T0 + 10  # idempotent
    late = [
        (await room.join(event_id=event, user_id=u, now=T0 + 11 + i)).ticket
        for i, u in enumerate(_users(8))
    ]
    for i, ticket in enumerate(late):
        place = await room.place(ticket)
        assert place is not None
        assert place.status is PlaceStatus.QUEUED
        assert (place.position, place.ahead, place.waiting) == (5 + i + 1, 5 + i, 13)
    positions = set()
    for ticket in early:
        place = await room.place(ticket)
        assert place is not None and place.status is PlaceStatus.QUEUED
        positions.add(place.position)
    assert positions == {1, 2, 3, 4, 5}
    admitted = await room.admit_next(event_id=event, n=13, now=T0 + 60)
    assert {a.ticket for a in admitted[:5]} == early
    assert [a.ticket for a in admitted[5:]] == late


async def test_a_join_after_the_opening_time_opens_the_room_first(room: WaitingRoom) -> None:
    """Nobody called open at salesStartAt: the first join after it opens the room, and queues FIFO."""
    event = _event()
    early = [
        (await room.join(event_id=event, user_id=u, now=T0, opens_at=T0 + 60)).ticket
        for u in _users(3)
    ]
    place = await room.place(early[0])
    assert place is not None and place.status is PlaceStatus.WAITING
    late = await room.join(event_id=event, user_id="usr_late", now=T0 + 61, opens_at=T0 + 60)
    place = await room.place(late.ticket)
    assert place is not None
    assert (place.status, place.queue_state, place.position) == (
        PlaceStatus.QUEUED,
        QueueState.OPEN,
        4,
    )
    assert await room.open(event_id=event, now=T0 + 70) == T0 + 60  # opened at the planned time


def _chi2_sf(x: float, dof: int) -> float:
    """P(X > x) for X ~ chi-square(dof), in closed form (integer dof; no scipy here)."""
    if x <= 0:
        return 1.0
    half = x / 2
    if dof % 2 == 0:
        term = total = 1.0
        for j in range(1, dof // 2):
            term *= half / j
            total += term
        return math.exp(-half) * total
    total, term = 0.0, math.sqrt(2 * x / math.pi) * math.exp(-half)
    for j in range(1, (dof + 1) // 2):
        total += term
        term *= x / (2 * j + 1)
    return math.erfc(math.sqrt(half)) + total


def _chi2_threshold(dof: int, alpha: float) -> float:
    """The x with P(X > x) = alpha, by bisection."""
    low, high = 0.0, 10_000.0
    for _ in range(200):
        mid = (low + high) / 2
        low, high = (mid, high) if _chi2_sf(mid, dof) > alpha else (low, mid)
    return high


def _pearson(counts: Counter[object], cells: list[object], trials: int) -> float:
    expected = trials / len(cells)
    return sum((counts[c] - expected) ** 2 / expected for c in cells)


def test_the_chi_square_tail_is_right() -> None:
    # Textbook 5 % critical values.
    for x, dof in ((3.841, 1), (5.991, 2), (7.815, 3), (35.172, 23)):
        assert _chi2_sf(x, dof) == pytest.approx(0.05, abs=1e-4)


QUEUE_SIZE = 4
TRIALS = 2000
# Two tests below, each failing a correct lottery with probability 1e-7 (chi-square
# approximation): together < 1e-6 with a margin for the approximation's error in the far tail.
ALPHA_EACH = 1e-7


async def test_the_opening_order_is_a_uniform_shuffle(room: WaitingRoom) -> None:
    """TRIALS rooms of QUEUE_SIZE people who join one after another before the opening.

    A uniform lottery makes all 4! = 24 orders equally likely, so Pearson's statistic over the
    24 orders (2000 trials: 83 expected per order) is chi-square with 23 degrees of freedom;
    the first to join (the one arrival order would favour) lands on each of the 4 places
    equally often: chi-square with 3. No seed: the draws come from the OS's CSPRNG, so the
    thresholds are set for a false failure rate, not tuned to a lucky seed. Power: arrival
    order, any fixed order, or a first joiner first 1/3 of the time instead of 1/4 fail it
    (test_the_shuffle_test_would_catch_a_biased_lottery).
    """

    async def one_trial() -> list[int]:
        event = _event()
        users = [f"usr_{i}" for i in range(QUEUE_SIZE)]
        for user in users:  # one after another: user 0 is always the earliest
            await room.join(event_id=event, user_id=user)
        await room.open(event_id=event)
        order = [a.user_id for a in await room.admit_next(event_id=event, n=QUEUE_SIZE)]
        assert sorted(order) == users
        return [users.index(u) for u in order]

    orders: list[tuple[int, ...]] = []
    for start in range(0, TRIALS, 100):
        batch = await asyncio.gather(*(one_trial() for _ in range(min(100, TRIALS - start))))
        orders.extend(tuple(o) for o in batch)

    cells: list[object] = list(itertools.permutations(range(QUEUE_SIZE)))
    by_order = _pearson(Counter(orders), cells, TRIALS)
    assert by_order < _chi2_threshold(len(cells) - 1, ALPHA_EACH), Counter(orders)

    first_joiner_place: Counter[object] = Counter(o.index(0) for o in orders)
    by_place = _pearson(first_joiner_place, list(range(QUEUE_SIZE)), TRIALS)
    assert by_place < _chi2_threshold(QUEUE_SIZE - 1, ALPHA_EACH), first_joiner_place


def test_the_shuffle_test_would_catch_a_biased_lottery() -> None:
    """The same statistics on orders a broken lottery gives: arrival order fails them."""
    arrival: Counter[object] = Counter({tuple(range(QUEUE_SIZE)): TRIALS})
    cells: list[object] = list(itertools.permutations(range(QUEUE_SIZE)))
    assert _pearson(arrival, cells, TRIALS) > _chi2_threshold(len(cells) - 1, ALPHA_EACH)
    # A first joiner first a third of the time instead of a quarter, the rest spread evenly.
    slight = Counter({0: TRIALS / 3, 1: 2 * TRIALS / 9, 2: 2 * TRIALS / 9, 3: 2 * TRIALS / 9})
    assert _pearson(slight, list(range(QUEUE_SIZE)), TRIALS) > _chi2_threshold(
        QUEUE_SIZE - 1, ALPHA_EACH
    )


async def test_admit_never_takes_more_than_asked(room: WaitingRoom) -> None:
    event = _event()
    for u in _users(20):
        await room.join(event_id=event, user_id=u)
    await room.open(event_id=event)
    first = await room.admit_next(event_id=event, n=7)
    assert len(first) == 7
    # Ten admitters at once, three each, for the 13 left: none takes more than 3, nobody twice.
    batches = await asyncio.gather(*(room.admit_next(event_id=event, n=3) for _ in range(10)))
    assert all(len(b) <= 3 for b in batches)
    tickets = [a.ticket for a in first] + [a.ticket for b in batches for a in b]
    assert len(tickets) == len(set(tickets)) == 20
    assert await room.admit_next(event_id=event, n=3) == []
    for ticket in tickets:
        place = await room.place(ticket)
        assert place is not None and place.status is PlaceStatus.ADMITTED
        assert place.admitted_at is not None and place.position is None


async def test_admitted_buyers_keep_their_ticket_when_joining_again(room: WaitingRoom) -> None:
    event = _event()
    ticket = await room.join(event_id=event, user_id="usr_a", now=T0)
    await room.open(event_id=event, now=T0 + 1)
    [admitted] = await room.admit_next(event_id=event, n=5, now=T0 + 2)
    assert (admitted.ticket, admitted.user_id, admitted.admitted_at, admitted.joined_at) == (
        ticket.ticket,
        "usr_a",
        T0 + 2,
        T0,
    )
    again = await room.join(event_id=event, user_id="usr_a", now=T0 + 3)
    assert again.ticket == ticket.ticket and not again.new
    place = await room.place(ticket.ticket)
    assert (
        place is not None and place.status is PlaceStatus.ADMITTED and place.admitted_at == T0 + 2
    )


async def test_a_closed_queue_says_so_and_admits_nobody(room: WaitingRoom) -> None:
    event = _event()
    tickets = [(await room.join(event_id=event, user_id=u)).ticket for u in _users(5)]
    await room.open(event_id=event)
    admitted = await room.admit_next(event_id=event, n=2)
    assert await room.close(event_id=event) is True
    assert await room.close(event_id=event) is False
    assert await room.admit_next(event_id=event, n=5) == []
    assert await room.open(event_id=event) is None  # a sold-out room does not reopen
    statuses: Counter[PlaceStatus] = Counter()
    for ticket in tickets:
        place = await room.place(ticket)
        assert place is not None and place.queue_state is QueueState.CLOSED
        assert place.position is None and place.ahead is None
        statuses[place.status] += 1
    assert statuses == {PlaceStatus.ADMITTED: 2, PlaceStatus.CLOSED: 3}
    with pytest.raises(QueueClosed):
        await room.join(event_id=event, user_id="usr_newcomer")
    # Someone still in line asking again gets their ticket back (and is told it is closed).
    still_waiting = next(t for t in tickets if t not in {a.ticket for a in admitted})
    place = await room.place(still_waiting)
    assert place is not None
    again = await room.join(event_id=event, user_id=place.user_id)
    assert again.ticket == still_waiting and not again.new


async def test_a_fresh_client_sees_the_same_places(room: WaitingRoom, prefix: str) -> None:
    """A gateway replica restarted (new process, new connection) answers exactly as before."""
    event = _event()
    early = [(await room.join(event_id=event, user_id=u)).ticket for u in _users(6)]
    await room.open(event_id=event)
    late = [(await room.join(event_id=event, user_id=u)).ticket for u in _users(4)]
    await room.admit_next(event_id=event, n=2)
    before = [await room.place(t) for t in early + late]

    fresh_client = aioredis.from_url(REDIS_URL, decode_responses=True)
    try:
        fresh = WaitingRoom(fresh_client, prefix=prefix)
        after = [await fresh.place(t) for t in early + late]
        assert after == before
        assert before[0] is not None
        again = await fresh.join(event_id=event, user_id=before[0].user_id)
        assert again.ticket == early[0] and not again.new
    finally:
        await fresh_client.aclose()


async def test_unknown_and_foreign_tickets_have_no_place(room: WaitingRoom) -> None:
    assert await room.place(f"{_event()}.AAAAAAAAAAAAAAAA") is None
    assert await room.place("not-a-ticket") is None
    assert await room.place("evnt_x}:meta.AAAAAAAAAAAAAAAA") is None
    with pytest.raises(ValueError):
        room.keys("evnt_}{x")


async def test_keys_are_namespaced_hash_tagged_and_expire(
    room: WaitingRoom, client: aioredis.Redis, prefix: str
) -> None:
    event = _event()
    await room.join(event_id=event, user_id="usr_a")
    await room.open(event_id=event)
    await room.admit_next(event_id=event, n=1)
    keys = sorted([k.decode() async for k in client.scan_iter(match=f"{prefix}:*")])
    assert keys == sorted(
        f"{prefix}:{{{event}}}:{kind}"
        for kind in ("meta", "users", "tickets", "joined", "admitted")
    )
    for key in keys:
        assert 0 < await client.ttl(key) <= 7 * 24 * 3600


async def test_late_arrival_scores_stay_exact_above_every_draw(
    room: WaitingRoom, client: aioredis.Redis
) -> None:
    event = _event()
    await room.join(event_id=event, user_id="usr_early")
    await room.open(event_id=event)
    late = [(await room.join(event_id=event, user_id=u)).ticket for u in _users(3)]
    scores = [await client.zscore(room.keys(event)["queue"], t) for t in late]
    assert scores == [LATE_BASE + 1, LATE_BASE + 2, LATE_BASE + 3]


async def test_paced_admission_never_exceeds_the_rate_even_with_racing_admitters(
    room: WaitingRoom, client: aioredis.Redis, prefix: str
) -> None:
    """Three replicas each run the admitter every simulated second for three minutes."""
    event = _event()
    for u in _users(400):
        await room.join(event_id=event, user_id=u, now=T0)
    await room.open(event_id=event, now=T0)
    pacer = AdmissionPacer(per_minute=30)
    rooms = [room, WaitingRoom(client, prefix=prefix), WaitingRoom(client, prefix=prefix)]
    times: list[float] = []
    for second in range(1, 181):
        now = T0 + second
        batches = await asyncio.gather(
            *(
                r.admit_paced(event_id=event, pacer=pacer, seats_left=10_000, max_batch=5, now=now)
                for r in rooms
            )
        )
        for batch in batches:
            assert len(batch) <= 5
            times.extend(a.admitted_at for a in batch)
    times.sort()
    assert len(times) == 90  # 30 a minute for 3 minutes
    for t in times:
        assert sum(1 for u in times if t - 60 < u <= t) <= 30


async def test_paced_admission_stops_at_the_seats_left(room: WaitingRoom) -> None:
    event = _event()
    for u in _users(50):
        await room.join(event_id=event, user_id=u, now=T0)
    await room.open(event_id=event, now=T0)
    pacer = AdmissionPacer(per_minute=6000)
    got = await room.admit_paced(
        event_id=event, pacer=pacer, seats_left=12, max_batch=100, now=T0 + 60
    )
    assert len(got) == 12
    # They hold the 12 seats for their admission window; nobody else gets in meanwhile.
    assert (
        await room.admit_paced(
            event_id=event, pacer=pacer, seats_left=12, max_batch=100, now=T0 + 120
        )
        == []
    )
    # Their window over (and the seats still unsold), the next ones come in.
    later = await room.admit_paced(
        event_id=event, pacer=pacer, seats_left=12, max_batch=100, now=T0 + 60 + 601
    )
    assert len(later) == 12


async def test_the_admitters_rate_reaches_every_place_read(room: WaitingRoom) -> None:
    event = _event()
    joined = await room.join(event_id=event, user_id="usr_rate", now=T0, opens_at=T0)
    assert (await room.place(joined.ticket)).admit_per_minute is None  # type: ignore[union-attr]
    await room.set_rate(event_id=event, per_minute=240)
    place = await room.place(joined.ticket)
    assert place is not None and place.admit_per_minute == 240 and place.position == 1


async def test_the_opening_and_a_fixed_rate_reach_the_place_reads_for_their_hints(
    room: WaitingRoom,
) -> None:
    event = _event()
    users = _users(3)
    tickets = [
        (await room.join(event_id=event, user_id=u, now=T0, opens_at=T0 + 3600, per_minute=120))
        for u in users
    ]
    places = [await room.place(t.ticket) for t in tickets]
    assert all(p is not None and p.status is PlaceStatus.WAITING for p in places)
    # The draw's order is there for the hints (never shown as a position before the opening).
    assert sorted(p.rank for p in places if p is not None) == [0, 1, 2]
    assert all(p is not None and p.position is None for p in places)
    first = places[0]
    assert first is not None and first.opens_at == T0 + 3600 and first.admit_per_minute == 120

    # The organiser moves the opening and turns the rate to auto: the fixed rate goes too.
    await room.set_opening(event_id=event, opens_at=T0 + 60, per_minute=None)
    moved = await room.place(tickets[0].ticket)
    assert moved is not None and moved.opens_at == T0 + 60 and moved.admit_per_minute is None
    # On sale at once (no opening) with a fixed rate again.
    await room.set_opening(event_id=event, opens_at=None, per_minute=90)
    now_on_sale = await room.place(tickets[0].ticket)
    assert now_on_sale is not None and now_on_sale.opens_at is None
    assert now_on_sale.admit_per_minute == 90
    # Once open, auto keeps the rate the admitter recorded.
    await room.open(event_id=event, now=T0 + 61)
    await room.set_rate(event_id=event, per_minute=300)
    await room.set_opening(event_id=event, opens_at=T0 + 61, per_minute=None)
    kept = await room.place(tickets[0].ticket)
    assert kept is not None and kept.admit_per_minute == 300 and kept.status is PlaceStatus.QUEUED


async def test_the_first_read_after_a_redis_restart_is_answered(tmp_path: Path) -> None:
    """A pooled connection that a Redis restart closed is retried on a fresh one: without
    `connect`'s retry policy the first call after the restart fails with ConnectionError (and the
    place read answered 503 until some other call had replaced the connection)."""
    from supervision.redis import start_embedded_redis

    server = await asyncio.to_thread(start_embedded_redis, tmp_path)
    client = connect(server.url, timeout=2.0)
    try:
        room = WaitingRoom(client, prefix="tftest:restart")
        joined = await room.join(event_id=_event(), user_id="usr_restart", now=T0)
        assert await room.place(joined.ticket) is not None
        await asyncio.to_thread(server.stop)
        server = await asyncio.to_thread(start_embedded_redis, tmp_path, port=server.port)
        # The restarted Redis keeps nothing (no persistence here): the ticket is unknown, but
        # the call is answered, not refused.
        assert await room.place(joined.ticket) is None
    finally:
        await client.aclose()
        await asyncio.to_thread(server.stop)
