"""Best available the usual way, for the plain baselines: the same score as TicketFlow's seat actor
(`domain/best_available.py`: no isolated seat created where avoidable, then front, then centre,
then the lower numbers), chosen and locked by Postgres or by Redis instead of an actor.

- Postgres: a `seat_rows` table (one row per seat row: tier, rank, free seats, longest run of free
  seats) is the unit of locking. A booking locks the first few rows, front to back, that can hold
  its request, with `FOR UPDATE SKIP LOCKED` (so concurrent bookings get different rows and never
  wait for one another), reads those rows' seats, lets the pure chooser
  (`domain.best_available.choose_seats`) pick among them, locks the chosen seats with the
  conditional update the named-seat path uses, and writes the rows' new counts, in one
  transaction. The score is applied to the rows it locked (`CANDIDATE_ROWS`), not the whole
  event: a block further back that would strand no seat is not seen when the first rows all
  would. When every fitting row is being chosen in, it waits for them (`FOR UPDATE`) instead of
  refusing.
- Redis: `benchmarks.baselines.best_seats_redis` (a Lua script over per-tier free-seat sets).
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from benchmarks.baselines.seatlocks import LOCK_SEATS_CONDITIONAL
from domain.best_available import SeatRequest, choose_seats, unavailable_message
from domain.seating import Seat

# Rows a Postgres booking locks and chooses among (together); more is closer to the whole-event
# score and holds more rows away from concurrent bookings.
CANDIDATE_ROWS = 4
# Rounds of choose-and-lock before a booking gives up (only a stale row count makes one fail).
ATTEMPTS = 4


@dataclass(frozen=True)
class BestSeats:
    """Seats chosen and locked, or (not ok) the SEATS_UNAVAILABLE message saying what is left."""

    ok: bool
    seat_ids: tuple[str, ...] = ()
    message: str = ""


def longest_run(numbers: list[int]) -> int:
    """The longest run of consecutive numbers."""
    best = run = 0
    previous: int | None = None
    for number in sorted(numbers):
        run = run + 1 if previous is not None and number == previous + 1 else 1
        previous = number
        best = max(best, run)
    return best


# -- Postgres ---------------------------------------------------------------------------------------
SEAT_ROWS_DDL = """
CREATE TABLE seat_rows (
    event_id text NOT NULL, row_label text NOT NULL, tier text NOT NULL, rank integer NOT NULL,
    free integer NOT NULL, longest_free integer NOT NULL,
    PRIMARY KEY (event_id, row_label)
);
CREATE INDEX seat_rows_rank_idx ON seat_rows (event_id, rank);
CREATE INDEX seats_row_idx ON seats (event_id, row_label);
"""
INSERT_SEAT_ROWS = """
INSERT INTO seat_rows (event_id, row_label, tier, rank, free, longest_free)
SELECT $1, r, t, k - 1, n, n FROM unnest($2::text[], $3::text[], $4::int[]) WITH ORDINALITY AS u(r, t, n, k)
"""
# $2: the longest run a row needs (together) or 1 (scattered); $4: how many rows.
_PICK_ROWS = """
SELECT row_label FROM seat_rows
WHERE event_id = $1 AND longest_free >= $2 AND ($3::text IS NULL OR tier = $3)
ORDER BY rank LIMIT $4
"""
PICK_ROWS_SKIP_LOCKED = _PICK_ROWS + "FOR UPDATE SKIP LOCKED"
PICK_ROWS_WAIT = _PICK_ROWS + "FOR UPDATE"
SELECT_ROW_SEATS = """
SELECT seat_id, row_label, number, tier, position,
       status = 'AVAILABLE' OR (status = 'LOCKED' AND lock_expires_at < now()) AS free
FROM seats WHERE event_id = $1 AND row_label = ANY($2::text[])
"""
UPDATE_ROW_COUNTS = """
UPDATE seat_rows AS r SET free = u.free, longest_free = u.longest
FROM unnest($2::text[], $3::int[], $4::int[]) AS u(row_label, free, longest)
WHERE r.event_id = $1 AND r.row_label = u.row_label
"""
SELECT_LEFT = """
SELECT coalesce(max(longest_free), 0) AS largest, coalesce(sum(free), 0)::int AS available
FROM seat_rows WHERE event_id = $1 AND ($2::text IS NULL OR tier = $2)
"""
LOCK_ROWS_OF_SEATS = """
SELECT r.row_label FROM seat_rows AS r
WHERE r.event_id = $1 AND r.row_label IN (
    SELECT row_label FROM seats WHERE event_id = $1 AND seat_id = ANY($2::text[])
)
ORDER BY r.rank FOR UPDATE
"""
RELEASE_BEST_SEATS = """
UPDATE seats SET status = 'AVAILABLE', holder = NULL, lock_expires_at = NULL
WHERE event_id = $1 AND seat_id = ANY($2::text[]) AND holder = $3 AND status = 'LOCKED'
"""


class _Lost(Exception):
    """Another booking took a chosen seat first (a stale read): roll back and choose again."""


class PostgresBestSeats:
    """Best available over the `seats` table of the plain service (plus `seat_rows`)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @staticmethod
    async def add_event(conn: asyncpg.Connection, event_id: str, seats: list[Seat]) -> None:
        """The event's rows, in layout order (its rank), with every seat free."""
        rows: dict[str, tuple[str, int]] = {}
        for seat in seats:
            tier, count = rows.get(seat.row, (seat.tier, 0))
            rows[seat.row] = (tier, count + 1)
        await conn.execute(
            INSERT_SEAT_ROWS,
            event_id,
            list(rows),
            [t for t, _ in rows.values()],
            [n for _, n in rows.values()],
        )

    async def choose_and_lock(
        self, event_id: str, request: SeatRequest, holder: str, ttl_s: float
    ) -> BestSeats:
        for _ in range(ATTEMPTS):
            try:
                async with self.pool.acquire() as conn, conn.transaction():
                    result = await self._once(conn, event_id, request, holder, ttl_s)
            except _Lost:
                continue
            if result is not None:
                return result
        return await self._refusal(event_id, request)

    async def _once(
        self,
        conn: asyncpg.Connection,
        event_id: str,
        request: SeatRequest,
        holder: str,
        ttl_s: float,
    ) -> BestSeats | None:
        need = request.quantity if request.together else 1
        many = CANDIDATE_ROWS if request.together else request.quantity
        args = (event_id, need, request.tier, many)
        labels = [r["row_label"] for r in await conn.fetch(PICK_ROWS_SKIP_LOCKED, *args)]
        if not labels:
            # Every row that fits is being chosen in by other bookings: wait for them.
            labels = [r["row_label"] for r in await conn.fetch(PICK_ROWS_WAIT, *args)]
        if not labels:
            return await self._refusal(event_id, request, conn)
        # A statement after the row locks: it sees every booking that chose in these rows before.
        found = await conn.fetch(SELECT_ROW_SEATS, event_id, labels)
        layout = [
            Seat(r["seat_id"], r["row_label"], r["number"], r["tier"], r["position"]) for r in found
        ]
        free = {r["seat_id"] for r in found if r["free"]}
        choice = choose_seats(layout, free, request)
        chosen = set(choice.seat_ids)
        if choice.ok:
            got = await conn.fetchval(
                LOCK_SEATS_CONDITIONAL, event_id, list(choice.seat_ids), holder, float(ttl_s)
            )
            if int(got) != len(chosen):
                raise _Lost
        # The rows' counts as they are now (also correcting any that had gone stale).
        left: dict[str, list[int]] = {label: [] for label in labels}
        for r in found:
            if r["free"] and r["seat_id"] not in chosen:
                left[r["row_label"]].append(r["number"])
        await conn.execute(
            UPDATE_ROW_COUNTS,
            event_id,
            list(left),
            [len(n) for n in left.values()],
            [longest_run(n) for n in left.values()],
        )
        return BestSeats(ok=True, seat_ids=choice.seat_ids) if choice.ok else None

    async def _refusal(
        self, event_id: str, request: SeatRequest, conn: asyncpg.Connection | None = None
    ) -> BestSeats:
        if conn is None:
            async with self.pool.acquire() as own:
                row = await own.fetchrow(SELECT_LEFT, event_id, request.tier)
        else:
            row = await conn.fetchrow(SELECT_LEFT, event_id, request.tier)
        largest = int(row["largest"])
        if not request.together:
            largest = min(largest, int(row["available"]))
        return BestSeats(
            ok=False,
            message=unavailable_message(
                tier=request.tier, largest_block=largest, available=int(row["available"])
            ),
        )

    async def release(self, event_id: str, seat_ids: list[str], holder: str) -> None:
        """The seats back to AVAILABLE and their rows' counts recomputed (under the rows' locks,
        so that no booking is choosing in them meanwhile)."""
        async with self.pool.acquire() as conn, conn.transaction():
            labels = [
                r["row_label"] for r in await conn.fetch(LOCK_ROWS_OF_SEATS, event_id, seat_ids)
            ]
            await conn.execute(RELEASE_BEST_SEATS, event_id, seat_ids, holder)
            found = await conn.fetch(SELECT_ROW_SEATS, event_id, labels)
            left: dict[str, list[int]] = {label: [] for label in labels}
            for r in found:
                if r["free"]:
                    left[r["row_label"]].append(r["number"])
            await conn.execute(
                UPDATE_ROW_COUNTS,
                event_id,
                list(left),
                [len(n) for n in left.values()],
                [longest_run(n) for n in left.values()],
            )
