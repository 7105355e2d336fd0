"""A plain booking service, the usual design: one FastAPI app on uvicorn, asyncpg, no Ray.

Why ~990 lines in one module: it stands for the usual single-file FastAPI + asyncpg service (it
shares only the lock scripts, the best-available engines, the waiters and the seat layout), and
that shape is what the benchmark measures.

It answers the part of TicketFlow's API that the on-sale benchmark uses, with the same shapes:
register/login (a trivial token issue: no password hashing; HS256 JWTs as TicketFlow's),
venues and events (ADMIN), the inventory, `POST /api/bookings` (202, then polled; named seats or
the best available: `quantity`, `tier`, `together`), `GET /api/bookings/:id`, both with
`Prefer: wait=N` (200 and `Preference-Applied` once final, `benchmarks.baselines.waiters`),
`GET /api/bookings/my`, `GET /api/payments/booking/:id` and `/health`.

A booking, started in a background task after the 202 (like TicketFlow's saga, but in-process and
not durable):

1. lock every seat, all or none: a Postgres row-state lock (`--lock postgres`, one statement with
   `FOR UPDATE SKIP LOCKED`) or the Redis Lua script (`--lock redis`); a taken seat ends the
   booking FAILED / SEATS_UNAVAILABLE. A best-available booking instead has its seats chosen and
   locked in one step by the same score as TicketFlow's seat actor (`best_seats.py`: candidate
   rows `FOR UPDATE SKIP LOCKED`; `best_seats_redis.py`: a Lua script over free-seat sorted
   sets), then its seats and price written; nothing fitting ends it FAILED / SEATS_UNAVAILABLE
   with a `failureMessage` saying what is left;
2. charge a simulated processor (same tokens as TicketFlow's, `--payment-latency-ms` of sleep);
3. one statement writes the sale (`seat_sales` has the seat as PRIMARY KEY: the unique backstop),
   the payment, the seats' SOLD status and the CONFIRMED booking; a unique violation refunds.

Everything lives in a schema of its own (`tf_bench_svc_<hex>`) and Redis keys under
`tf:bench:<schema>:`, both removed at shutdown. Run:
`python -m benchmarks.baselines.plain_service --port 8001 --lock postgres`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import logging
import math
import secrets
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, Literal

import asyncpg
import jwt
import redis.asyncio as aioredis
import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from benchmarks.baselines.best_seats import SEAT_ROWS_DDL, BestSeats, PostgresBestSeats
from benchmarks.baselines.best_seats_redis import RedisBestSeats
from benchmarks.baselines.seatlocks import PostgresSeatLocks, RedisSeatLocks
from benchmarks.baselines.waiters import BookingWaiters, applied, requested_wait, wait_for_end
from benchmarks.common import default_database_url, default_redis_url, new_schema_name
from domain.best_available import SeatRequest
from domain.seating import TicketTier, generate_layout

logger = logging.getLogger("plain_service")

SUCCESS_TOKENS = {"pm_card_visa", "pm_card_mastercard", "tok_visa"}

SCHEMA_DDL = (
    """
CREATE TABLE users (
    id text PRIMARY KEY, email text NOT NULL UNIQUE, name text NOT NULL, password_sha256 text NOT NULL,
    role text NOT NULL, created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE venues (
    id text PRIMARY KEY, name text NOT NULL, address text NOT NULL, city text NOT NULL,
    country text NOT NULL, capacity integer NOT NULL
);
CREATE TABLE events (
    id text PRIMARY KEY, venue_id text NOT NULL REFERENCES venues (id), name text NOT NULL,
    starts_at timestamptz NOT NULL, ends_at timestamptz NOT NULL, created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE seats (
    event_id text NOT NULL REFERENCES events (id), seat_id text NOT NULL, row_label text NOT NULL,
    number integer NOT NULL, tier text NOT NULL, price integer NOT NULL, currency text NOT NULL,
    position integer NOT NULL,
    status text NOT NULL DEFAULT 'AVAILABLE' CHECK (status IN ('AVAILABLE', 'LOCKED', 'SOLD')),
    holder text, lock_expires_at timestamptz,
    PRIMARY KEY (event_id, seat_id)
);
CREATE TABLE bookings (
    id text PRIMARY KEY, user_id text NOT NULL REFERENCES users (id), event_id text NOT NULL REFERENCES events (id),
    seat_ids text[] NOT NULL, status text NOT NULL, failure_reason text, failure_message text,
    total_amount integer NOT NULL,
    currency text NOT NULL, payment_token text NOT NULL, payment_id text,
    created_at timestamptz NOT NULL DEFAULT now(), confirmed_at timestamptz
);
CREATE INDEX bookings_user_idx ON bookings (user_id, created_at DESC);
CREATE TABLE seat_sales (
    event_id text NOT NULL, seat_id text NOT NULL, booking_id text NOT NULL REFERENCES bookings (id),
    sold_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, seat_id)
);
CREATE TABLE payments (
    id text PRIMARY KEY, booking_id text NOT NULL REFERENCES bookings (id), user_id text NOT NULL,
    amount integer NOT NULL, currency text NOT NULL, status text NOT NULL,
    provider_transaction_id text, processed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payments_booking_idx ON payments (booking_id);
"""
    + SEAT_ROWS_DDL
)

INSERT_USER = """
INSERT INTO users (id, email, name, password_sha256, role) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (email) DO NOTHING RETURNING created_at
"""
SELECT_LOGIN = "SELECT id, name, email, role, password_sha256 FROM users WHERE email = $1"
INSERT_VENUE = "INSERT INTO venues (id, name, address, city, country, capacity) VALUES ($1, $2, $3, $4, $5, $6)"
SELECT_VENUE_CAPACITY = "SELECT capacity FROM venues WHERE id = $1"
INSERT_EVENT = "INSERT INTO events (id, venue_id, name, starts_at, ends_at) VALUES ($1, $2, $3, $4, $5) RETURNING created_at"
INSERT_SEATS = """
INSERT INTO seats (event_id, seat_id, row_label, number, tier, price, currency, position)
SELECT $1, s, r, n, t, p, $7, pos
FROM unnest($2::text[], $3::text[], $4::int[], $5::text[], $6::int[]) WITH ORDINALITY AS u(s, r, n, t, p, pos)
"""
SELECT_EVENT_EXISTS = "SELECT 1 FROM events WHERE id = $1"
SELECT_SEATS = """
SELECT seat_id, row_label, number, tier, price, currency, status, lock_expires_at > now() AS live
FROM seats WHERE event_id = $1 ORDER BY position
"""
# Validates the seats and prices the booking on the server in the same statement as the insert.
INSERT_BOOKING = """
INSERT INTO bookings (id, user_id, event_id, seat_ids, status, total_amount, currency, payment_token)
SELECT $1, $2, $3, $4::text[], 'PENDING', sum(price), min(currency), $5
FROM seats WHERE event_id = $3 AND seat_id = ANY($4::text[])
HAVING count(*) = cardinality($4::text[])
RETURNING total_amount, currency
"""
# Best available: checks the event (and the tier asked for) exist; seats and price come later.
INSERT_BEST_BOOKING = """
INSERT INTO bookings (id, user_id, event_id, seat_ids, status, total_amount, currency, payment_token)
SELECT $1, $2, $3, '{}', 'PENDING', 0, s.currency, $4
FROM (SELECT currency FROM seats WHERE event_id = $3 AND ($5::text IS NULL OR tier = $5) LIMIT 1) AS s
RETURNING currency
"""
SET_BOOKING_SEATS = """
UPDATE bookings SET seat_ids = $3::text[],
    total_amount = (SELECT sum(price) FROM seats WHERE event_id = $2 AND seat_id = ANY($3::text[]))
WHERE id = $1 RETURNING total_amount
"""
FAIL_BOOKING = "UPDATE bookings SET status = 'FAILED', failure_reason = $2 WHERE id = $1"
FAIL_BOOKING_SAYING = """
UPDATE bookings SET status = 'FAILED', failure_reason = $2, failure_message = $3 WHERE id = $1
"""
CONFIRM_BOOKING = """
WITH sale AS (
    INSERT INTO seat_sales (event_id, seat_id, booking_id) SELECT $2, s, $1 FROM unnest($3::text[]) AS s RETURNING 1
), sold AS (
    UPDATE seats SET status = 'SOLD', holder = $1, lock_expires_at = NULL
    WHERE event_id = $2 AND seat_id = ANY($3::text[]) RETURNING 1
), pay AS (
    INSERT INTO payments (id, booking_id, user_id, amount, currency, status, provider_transaction_id)
    VALUES ($4, $1, $5, $6, $7, 'SUCCESS', $8) RETURNING 1
)
UPDATE bookings SET status = 'CONFIRMED', confirmed_at = now(), payment_id = $4
WHERE id = $1 AND (SELECT count(*) FROM sale) = cardinality($3::text[])
"""
REFUNDED_FAIL = """
WITH pay AS (
    INSERT INTO payments (id, booking_id, user_id, amount, currency, status, provider_transaction_id)
    VALUES ($2, $1, $3, $4, $5, 'REFUNDED', $6) RETURNING 1
)
UPDATE bookings SET status = 'FAILED', failure_reason = 'LOCK_EXPIRED', payment_id = $2 WHERE id = $1
"""
DECLINED_FAIL = """
WITH pay AS (
    INSERT INTO payments (id, booking_id, user_id, amount, currency, status) VALUES ($2, $1, $3, $4, $5, 'FAILED')
    RETURNING 1
)
UPDATE bookings SET status = 'FAILED', failure_reason = 'PAYMENT_DECLINED', payment_id = $2 WHERE id = $1
"""
SELECT_BOOKING = """
SELECT b.id, b.user_id, b.event_id, b.seat_ids, b.status, b.failure_reason, b.failure_message,
       b.total_amount, b.currency, b.payment_id, b.created_at, b.confirmed_at, e.name AS event_name, e.starts_at, v.name AS venue_name
FROM bookings b JOIN events e ON e.id = b.event_id JOIN venues v ON v.id = e.venue_id
WHERE b.id = $1
"""
SELECT_MY_BOOKINGS = """
SELECT b.id, b.event_id, b.seat_ids, b.status, b.failure_reason, b.failure_message, b.total_amount,
       b.currency, b.created_at,
       b.confirmed_at, e.name AS event_name, e.starts_at, count(*) OVER () AS total
FROM bookings b JOIN events e ON e.id = b.event_id
WHERE b.user_id = $1 AND ($2::text IS NULL OR b.status = $2)
ORDER BY b.created_at DESC, b.id
LIMIT $3 OFFSET $4
"""
SELECT_PAYMENT_OF_BOOKING = """
SELECT id, booking_id, user_id, amount, currency, status, provider_transaction_id, processed_at
FROM payments WHERE booking_id = $1 ORDER BY processed_at DESC LIMIT 1
"""


class ApiError(Exception):
    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


def _id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(10)}"


def _z(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _envelope(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "requestId": _id("req")}}
    return JSONResponse(body, status_code=status, headers=headers)


# -- request bodies -----------------------------------------------------------------------------
class RegisterBody(BaseModel):
    name: str = Field(min_length=2, max_length=100)
    email: str = Field(min_length=3, max_length=254)
    password: str = Field(min_length=8, max_length=128)


class LoginBody(BaseModel):
    email: str
    password: str


class VenueBody(BaseModel):
    name: str
    address: str
    city: str
    country: str = Field(min_length=2, max_length=2)
    capacity: int = Field(gt=0)


class TierBody(BaseModel):
    tier: str
    price: int = Field(gt=0)
    currency: str
    capacity: int = Field(gt=0)


class EventBody(BaseModel):
    name: str
    description: str = ""
    venueId: str
    startsAt: datetime
    endsAt: datetime
    ticketTiers: list[TierBody] = Field(min_length=1)


class PaymentMethodBody(BaseModel):
    type: str
    token: str = Field(min_length=1, max_length=255)


class BookingBody(BaseModel):
    """Named seats (`seatIds`) or the best available (`quantity`, `tier`, `together`)."""

    eventId: str
    seatIds: list[str] | None = None
    quantity: int | None = None
    tier: Literal["GENERAL", "VIP", "STANDING"] | None = None
    together: bool = True
    paymentMethod: PaymentMethodBody


# -- the service ----------------------------------------------------------------------------------
class PlainService:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.schema: str = args.schema or new_schema_name("svc")
        self.secret = secrets.token_urlsafe(32)
        self.pool: asyncpg.Pool | None = None
        self.redis: aioredis.Redis[bytes] | None = None
        self.redis_locks: RedisSeatLocks | None = None
        self.pg_locks: PostgresSeatLocks | None = None
        self.pg_best: PostgresBestSeats | None = None
        self.redis_best: RedisBestSeats | None = None
        self.waiters = BookingWaiters()
        self.tasks: set[asyncio.Task[None]] = set()
        self.started_at = time.monotonic()

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        admin = await asyncpg.connect(self.args.database_url)
        try:
            await admin.execute(f'CREATE SCHEMA "{self.schema}"')
            await admin.execute(f'SET search_path TO "{self.schema}"')
            await admin.execute(SCHEMA_DDL)
            await admin.execute(
                INSERT_USER,
                _id("usr"),
                self.args.admin_email.lower(),
                "Administrator",
                _sha(self.args.admin_password),
                "ADMIN",
            )
        finally:
            await admin.close()
        self.pool = await asyncpg.create_pool(
            self.args.database_url,
            min_size=2,
            max_size=self.args.pool_size,
            server_settings={"search_path": self.schema},
            # asyncpg's default runs a reset query (RESET ALL, UNLISTEN, ...) on every release: a
            # round trip per request (~11 % of this service's CPU). Nothing here leaves session
            # state behind, so skip it.
            reset=_keep_session,
        )
        self.pg_locks = PostgresSeatLocks(self.pool)
        self.pg_best = PostgresBestSeats(self.pool)
        if self.args.lock == "redis":
            self.redis = aioredis.from_url(self.args.redis_url)
            lock_prefix = f"tf:bench:{self.schema}:seat:"
            self.redis_locks = RedisSeatLocks(self.redis, lock_prefix)
            # Under the lock keys' prefix (event ids never start with "best"), so that one
            # clean-up removes both.
            self.redis_best = RedisBestSeats(self.redis, lock_prefix + "best:", lock_prefix)
        logger.info("plain service ready (schema %s, lock %s)", self.schema, self.args.lock)

    async def stop(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.redis_locks is not None:
            await self.redis_locks.delete_all()
        if self.redis is not None:
            await self.redis.aclose()  # type: ignore[attr-defined]
        if self.pool is not None:
            await self.pool.close()
        if not self.args.keep_schema:
            conn = await asyncpg.connect(self.args.database_url)
            try:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
            finally:
                await conn.close()

    def db(self) -> asyncpg.Pool:
        assert self.pool is not None
        return self.pool

    # -- auth ----------------------------------------------------------------------------------
    def issue(self, user: dict[str, Any]) -> tuple[str, datetime]:
        now = int(time.time())
        exp = now + 24 * 3600
        payload = {
            "sub": user["id"],
            "name": user["name"],
            "email": user["email"],
            "role": user["role"],
            "iat": now,
            "exp": exp,
        }
        return jwt.encode(payload, self.secret, algorithm="HS256"), datetime.fromtimestamp(exp, UTC)

    def principal(self, request: Request) -> dict[str, Any]:
        header = request.headers.get("authorization", "")
        if not header.startswith("Bearer "):
            raise ApiError(401, "UNAUTHORIZED", "Missing bearer token")
        try:
            claims: dict[str, Any] = jwt.decode(header[7:], self.secret, algorithms=["HS256"])
        except jwt.PyJWTError:
            raise ApiError(401, "UNAUTHORIZED", "Invalid or expired token")
        return claims

    def admin(self, request: Request) -> dict[str, Any]:
        claims = self.principal(request)
        if claims.get("role") != "ADMIN":
            raise ApiError(403, "FORBIDDEN", "ADMIN role required")
        return claims

    # -- the booking flow ----------------------------------------------------------------------
    def spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def lock(self, event_id: str, seat_ids: list[str], booking_id: str) -> bool:
        if self.redis_locks is not None:
            return await self.redis_locks.lock(
                event_id, seat_ids, booking_id, int(self.args.lock_ttl * 1000)
            )
        assert self.pg_locks is not None
        return await self.pg_locks.lock_skip_locked(
            event_id, seat_ids, booking_id, self.args.lock_ttl
        )

    async def choose(self, event_id: str, request: SeatRequest, booking_id: str) -> BestSeats:
        """Best available: choose and lock in one step (a Lua script, or one transaction)."""
        if self.redis_best is not None:
            return await self.redis_best.choose_and_lock(
                event_id, request, booking_id, int(self.args.lock_ttl * 1000)
            )
        assert self.pg_best is not None
        return await self.pg_best.choose_and_lock(event_id, request, booking_id, self.args.lock_ttl)

    async def release(
        self, event_id: str, seat_ids: list[str], booking_id: str, *, best: bool = False
    ) -> None:
        if best:  # the best-available structures get the seats back too
            if self.redis_best is not None:
                await self.redis_best.release(event_id, seat_ids, booking_id)
            else:
                assert self.pg_best is not None
                await self.pg_best.release(event_id, seat_ids, booking_id)
            return
        if self.redis_locks is not None:
            await self.redis_locks.release(event_id, seat_ids, booking_id)
        else:
            assert self.pg_locks is not None
            await self.pg_locks.release(event_id, seat_ids, booking_id)

    async def run_booking(
        self,
        *,
        booking_id: str,
        user_id: str,
        event_id: str,
        seat_ids: list[str],
        amount: int,
        currency: str,
        token: str,
        request: SeatRequest | None = None,
    ) -> None:
        try:
            await self._run_booking(
                booking_id=booking_id,
                user_id=user_id,
                event_id=event_id,
                seat_ids=seat_ids,
                amount=amount,
                currency=currency,
                token=token,
                request=request,
            )
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("booking %s failed unexpectedly", booking_id)
            with contextlib.suppress(Exception):
                async with self.db().acquire() as conn:
                    await conn.execute(FAIL_BOOKING, booking_id, "INTERNAL_ERROR")
        finally:
            self.waiters.ended(booking_id)  # wakes the requests waiting for it (Prefer: wait)

    async def _run_booking(
        self,
        *,
        booking_id: str,
        user_id: str,
        event_id: str,
        seat_ids: list[str],
        amount: int,
        currency: str,
        token: str,
        request: SeatRequest | None,
    ) -> None:
        pool = self.db()
        best = request is not None
        if request is not None:
            chosen = await self.choose(event_id, request, booking_id)
            async with pool.acquire() as conn:
                if not chosen.ok:
                    await conn.execute(
                        FAIL_BOOKING_SAYING, booking_id, "SEATS_UNAVAILABLE", chosen.message
                    )
                    return
                seat_ids = list(chosen.seat_ids)
                amount = await conn.fetchval(SET_BOOKING_SEATS, booking_id, event_id, seat_ids)
        elif not await self.lock(event_id, seat_ids, booking_id):
            async with pool.acquire() as conn:
                await conn.execute(FAIL_BOOKING, booking_id, "SEATS_UNAVAILABLE")
            return
        # The simulated processor: same tokens and the same configurable latency as TicketFlow's.
        if self.args.payment_latency_ms:
            await asyncio.sleep(self.args.payment_latency_ms / 1000)
        payment_id = _id("pay")
        if token not in SUCCESS_TOKENS:
            await self.release(event_id, seat_ids, booking_id, best=best)
            async with pool.acquire() as conn:
                await conn.execute(DECLINED_FAIL, booking_id, payment_id, user_id, amount, currency)
            return
        transaction = "ch_" + secrets.token_hex(12)
        try:
            async with pool.acquire() as conn:
                await conn.execute(
                    CONFIRM_BOOKING,
                    booking_id,
                    event_id,
                    seat_ids,
                    payment_id,
                    user_id,
                    amount,
                    currency,
                    transaction,
                )
        except asyncpg.UniqueViolationError:
            # Someone else's sale holds a seat (our lock lapsed): refund and fail.
            if self.args.payment_latency_ms:
                await asyncio.sleep(self.args.payment_latency_ms / 1000)
            async with pool.acquire() as conn:
                await conn.execute(
                    REFUNDED_FAIL, booking_id, payment_id, user_id, amount, currency, transaction
                )
            await self.release(event_id, seat_ids, booking_id, best=best)
            return
        if self.redis_locks is not None:
            await self.redis_locks.promote(event_id, seat_ids, booking_id)


async def _keep_session(_conn: asyncpg.Connection) -> None:
    return None


def _seat_request(body: BookingBody) -> SeatRequest | None:
    """The best-available request of a body that asks for a quantity (None for named seats);
    refuses what TicketFlow refuses, with the same codes."""
    if (body.seatIds is None) == (body.quantity is None):
        raise ApiError(
            400,
            "VALIDATION_ERROR",
            "Give exactly one of seatIds (the seats to book) and quantity (the best available)",
        )
    if body.quantity is None:
        seat_ids = body.seatIds or []
        if body.tier is not None:
            raise ApiError(400, "VALIDATION_ERROR", "tier applies to a best-available request")
        if not 1 <= len(seat_ids) <= 10:
            raise ApiError(
                400, "INVALID_SEAT_COUNT", f"Must book between 1 and 10 seats; got {len(seat_ids)}"
            )
        if len(set(seat_ids)) != len(seat_ids):
            raise ApiError(400, "VALIDATION_ERROR", "seatIds: each seat may appear only once")
        return None
    if not 1 <= body.quantity <= 10:
        raise ApiError(
            400, "INVALID_SEAT_COUNT", f"Must book between 1 and 10 seats; got {body.quantity}"
        )
    return SeatRequest(quantity=body.quantity, tier=body.tier, together=body.together)


async def _refuse_unknown_event(conn: asyncpg.Connection, event_id: str) -> None:
    if await conn.fetchval(SELECT_EVENT_EXISTS, event_id) is None:
        raise ApiError(404, "EVENT_NOT_FOUND", f"Event {event_id} does not exist")


def _sha(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


def _booking_item(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["id"],
        "eventId": row["event_id"],
        "eventName": row["event_name"],
        "eventDate": _z(row["starts_at"]),
        "seatIds": list(row["seat_ids"]),
        "status": row["status"],
        "totalAmount": row["total_amount"],
        "currency": row["currency"],
        "createdAt": _z(row["created_at"]),
        "confirmedAt": _z(row["confirmed_at"]),
        "failureReason": row["failure_reason"],
        "failureMessage": row["failure_message"],
    }


def create_app(service: PlainService) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(
        title="plain booking service (baseline)", lifespan=lifespan, docs_url=None, redoc_url=None
    )

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return _envelope(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return _envelope(400, "VALIDATION_ERROR", str(exc.errors()[:3]))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return _envelope(404, "NOT_FOUND", "No such route")
        return _envelope(exc.status_code, f"HTTP_{exc.status_code}", str(exc.detail))

    @app.exception_handler(Exception)
    async def _internal(_request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error", exc_info=exc)
        return _envelope(500, "INTERNAL_ERROR", "Internal error")

    @app.get("/health")
    async def health() -> JSONResponse:
        return JSONResponse(
            {
                "status": "ok",
                "version": "baseline",
                "uptime": int(time.monotonic() - service.started_at),
            }
        )

    @app.post("/api/users/register")
    async def register(body: RegisterBody) -> JSONResponse:
        user_id = _id("usr")
        email = body.email.strip().lower()
        async with service.db().acquire() as conn:
            created = await conn.fetchval(
                INSERT_USER, user_id, email, body.name, _sha(body.password), "USER"
            )
        if created is None:
            raise ApiError(409, "EMAIL_ALREADY_EXISTS", f"Email {email} is already registered")
        return JSONResponse(
            {
                "id": user_id,
                "name": body.name,
                "email": email,
                "role": "USER",
                "createdAt": _z(created),
            },
            status_code=201,
        )

    @app.post("/api/users/login")
    async def login(body: LoginBody) -> JSONResponse:
        async with service.db().acquire() as conn:
            row = await conn.fetchrow(SELECT_LOGIN, body.email.strip().lower())
        if row is None or row["password_sha256"] != _sha(body.password):
            raise ApiError(401, "INVALID_CREDENTIALS", "Email/password combination incorrect")
        user = {"id": row["id"], "name": row["name"], "email": row["email"], "role": row["role"]}
        token, expires = service.issue(user)
        return JSONResponse({"token": token, "expiresAt": _z(expires), "user": user})

    @app.post("/api/venues")
    async def create_venue(body: VenueBody, request: Request) -> JSONResponse:
        service.admin(request)
        venue_id = _id("ven")
        async with service.db().acquire() as conn:
            await conn.execute(
                INSERT_VENUE,
                venue_id,
                body.name,
                body.address,
                body.city,
                body.country,
                body.capacity,
            )
        return JSONResponse(
            {
                "id": venue_id,
                "name": body.name,
                "city": body.city,
                "country": body.country,
                "capacity": body.capacity,
            },
            status_code=201,
        )

    @app.post("/api/events")
    async def create_event(body: EventBody, request: Request) -> JSONResponse:
        service.admin(request)
        if body.endsAt <= body.startsAt:
            raise ApiError(400, "VALIDATION_ERROR", "endsAt must be after startsAt")
        tiers = [TicketTier(t.tier, t.price, t.currency, t.capacity) for t in body.ticketTiers]
        seats = generate_layout(tiers, seats_per_row=service.args.seats_per_row)
        price = {t.tier: t.price for t in tiers}
        event_id = _id("evnt")
        async with service.db().acquire() as conn, conn.transaction():
            capacity = await conn.fetchval(SELECT_VENUE_CAPACITY, body.venueId)
            if capacity is None:
                raise ApiError(404, "VENUE_NOT_FOUND", f"Venue {body.venueId} does not exist")
            if len(seats) > capacity:
                raise ApiError(
                    422, "CAPACITY_EXCEEDED", "Tier capacities exceed the venue's capacity"
                )
            created = await conn.fetchval(
                INSERT_EVENT, event_id, body.venueId, body.name, body.startsAt, body.endsAt
            )
            await conn.execute(
                INSERT_SEATS,
                event_id,
                [s.id for s in seats],
                [s.row for s in seats],
                [s.number for s in seats],
                [s.tier for s in seats],
                [price[s.tier] for s in seats],
                tiers[0].currency,
            )
            if service.redis_best is None:
                await PostgresBestSeats.add_event(conn, event_id, seats)
        if service.redis_best is not None:
            await service.redis_best.add_event(event_id, seats)
        return JSONResponse(
            {"id": event_id, "name": body.name, "createdAt": _z(created)}, status_code=201
        )

    @app.get("/api/inventory/events/{event_id}/seats")
    async def inventory(event_id: str) -> JSONResponse:
        async with service.db().acquire() as conn:
            if await conn.fetchval(SELECT_EVENT_EXISTS, event_id) is None:
                raise ApiError(404, "EVENT_NOT_FOUND", f"Event {event_id} does not exist")
            rows = await conn.fetch(SELECT_SEATS, event_id)
        held: dict[str, str] = {}
        if service.redis_locks is not None:
            held = await service.redis_locks.states(event_id, [r["seat_id"] for r in rows])
        seats = []
        counts = {"AVAILABLE": 0, "LOCKED": 0, "RESERVED": 0}
        for r in rows:
            if r["status"] == "SOLD":
                status = "RESERVED"
            elif r["status"] == "LOCKED" and r["live"]:
                status = "LOCKED"
            else:
                status = held.get(r["seat_id"], "AVAILABLE")
            counts[status] += 1
            seats.append(
                {
                    "id": r["seat_id"],
                    "row": r["row_label"],
                    "number": r["number"],
                    "tier": r["tier"],
                    "price": r["price"],
                    "currency": r["currency"],
                    "status": status,
                }
            )
        summary = {
            "total": len(rows),
            "available": counts["AVAILABLE"],
            "locked": counts["LOCKED"],
            "reserved": counts["RESERVED"],
        }
        return JSONResponse({"eventId": event_id, "seats": seats, "summary": summary})

    @app.post("/api/bookings")
    async def create_booking(body: BookingBody, request: Request) -> JSONResponse:
        claims = service.principal(request)
        booking_id = _id("bkg")
        wanted = _seat_request(body)
        async with service.db().acquire() as conn:
            if wanted is not None:
                currency = await conn.fetchval(
                    INSERT_BEST_BOOKING,
                    booking_id,
                    claims["sub"],
                    body.eventId,
                    body.paymentMethod.token,
                    wanted.tier,
                )
                if currency is None:
                    await _refuse_unknown_event(conn, body.eventId)
                    raise ApiError(
                        400,
                        "VALIDATION_ERROR",
                        f"tier: event {body.eventId} has no {wanted.tier} seats",
                    )
                seat_ids: list[str] = []
                amount = 0
            else:
                seat_ids = body.seatIds or []
                row = await conn.fetchrow(
                    INSERT_BOOKING,
                    booking_id,
                    claims["sub"],
                    body.eventId,
                    seat_ids,
                    body.paymentMethod.token,
                )
                if row is None:
                    await _refuse_unknown_event(conn, body.eventId)
                    raise ApiError(
                        400, "VALIDATION_ERROR", f"seatIds: not seats of event {body.eventId}"
                    )
                amount, currency = row["total_amount"], row["currency"]
        service.waiters.started(booking_id)
        service.spawn(
            service.run_booking(
                booking_id=booking_id,
                user_id=claims["sub"],
                event_id=body.eventId,
                seat_ids=seat_ids,
                amount=amount,
                currency=currency,
                token=body.paymentMethod.token,
                request=wanted,
            )
        )
        wait = requested_wait(request.headers.get("prefer"))
        if wait is not None:
            final = await _final_within(booking_id, claims, wait)
            if final is not None:
                return JSONResponse(final, headers=applied(wait))
        return JSONResponse(
            {
                "bookingId": booking_id,
                "status": "PENDING",
                "message": f"Booking is being processed. Poll GET /api/bookings/{booking_id} for status.",
            },
            status_code=202,
        )

    async def _read_booking(booking_id: str, claims: dict[str, Any]) -> dict[str, Any]:
        async with service.db().acquire() as conn:
            row = await conn.fetchrow(SELECT_BOOKING, booking_id)
        if row is None or (row["user_id"] != claims["sub"] and claims.get("role") != "ADMIN"):
            raise ApiError(404, "BOOKING_NOT_FOUND", f"Booking {booking_id} does not exist")
        body = _booking_item(row)
        body.update(
            userId=row["user_id"],
            venueName=row["venue_name"],
            paymentId=row["payment_id"],
            cancelledAt=None,
        )
        return body

    async def _final_within(
        booking_id: str, claims: dict[str, Any], seconds: int
    ) -> dict[str, Any] | None:
        """The booking if it is final within `seconds` (its own task wakes us), else None."""
        end = service.waiters.end_of(booking_id)  # before the read: an end between is not missed
        if not await wait_for_end(end, seconds):
            return None
        body = await _read_booking(booking_id, claims)
        return body if body["status"] != "PENDING" else None

    @app.get("/api/bookings/my")
    async def my_bookings(
        request: Request, status: str | None = None, page: int = 1, perPage: int = 20
    ) -> JSONResponse:
        claims = service.principal(request)
        if not 1 <= perPage <= 100 or page < 1:
            raise ApiError(400, "VALIDATION_ERROR", "page >= 1 and 1 <= perPage <= 100")
        async with service.db().acquire() as conn:
            rows = await conn.fetch(
                SELECT_MY_BOOKINGS, claims["sub"], status, perPage, (page - 1) * perPage
            )
        total = int(rows[0]["total"]) if rows else 0
        return JSONResponse(
            {
                "data": [_booking_item(r) for r in rows],
                "pagination": {
                    "page": page,
                    "perPage": perPage,
                    "total": total,
                    "totalPages": math.ceil(total / perPage) if total else 0,
                },
            }
        )

    @app.get("/api/bookings/{booking_id}")
    async def get_booking(booking_id: str, request: Request) -> JSONResponse:
        claims = service.principal(request)
        wait = requested_wait(request.headers.get("prefer"))
        if wait is not None:
            end = service.waiters.end_of(booking_id)
            body = await _read_booking(booking_id, claims)  # also refuses another user's booking
            if body["status"] == "PENDING" and await wait_for_end(end, wait):
                body = await _read_booking(booking_id, claims)
            if body["status"] != "PENDING":
                return JSONResponse(body, headers=applied(wait))
            return JSONResponse(body)
        return JSONResponse(await _read_booking(booking_id, claims))

    @app.get("/api/payments/booking/{booking_id}")
    async def payment_of_booking(booking_id: str, request: Request) -> JSONResponse:
        claims = service.principal(request)
        async with service.db().acquire() as conn:
            row = await conn.fetchrow(SELECT_PAYMENT_OF_BOOKING, booking_id)
        if row is None or (row["user_id"] != claims["sub"] and claims.get("role") != "ADMIN"):
            raise ApiError(404, "PAYMENT_NOT_FOUND", f"No payment found for booking {booking_id}")
        return JSONResponse(
            {
                "id": row["id"],
                "bookingId": row["booking_id"],
                "userId": row["user_id"],
                "amount": row["amount"],
                "currency": row["currency"],
                "status": row["status"],
                "providerTransactionId": row["provider_transaction_id"],
                "processedAt": _z(row["processed_at"]),
            }
        )

    return app


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.baselines.plain_service",
        description="Plain FastAPI/uvicorn + asyncpg booking service (benchmark baseline)",
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s)"
    )
    p.add_argument(
        "--port", type=int, default=8001, help="port to listen on (default: %(default)s)"
    )
    p.add_argument(
        "--lock",
        choices=("postgres", "redis"),
        default="postgres",
        help="seat-lock engine: Postgres row state (SKIP LOCKED) or the Redis Lua script (default: %(default)s)",
    )
    p.add_argument(
        "--database-url",
        default=default_database_url(),
        help="Postgres DSN; a schema tf_bench_svc_<hex> is created there and dropped at exit "
        "(default: $DATABASE_URL or %(default)s)",
    )
    p.add_argument(
        "--redis-url",
        default=default_redis_url(),
        help="Redis URL for --lock redis; keys under tf:bench: (default: $REDIS_URL or %(default)s)",
    )
    p.add_argument(
        "--schema", default=None, help="schema name to create (default: a fresh tf_bench_svc_<hex>)"
    )
    p.add_argument("--keep-schema", action="store_true", help="do not drop the schema at exit")
    p.add_argument(
        "--payment-latency-ms",
        type=int,
        default=0,
        help="simulated card-processor latency per charge; match TICKETFLOW_PAYMENT_LATENCY_MS (default: %(default)s)",
    )
    p.add_argument(
        "--lock-ttl",
        type=float,
        default=300.0,
        help="seconds a seat lock lasts (default: %(default)s)",
    )
    p.add_argument(
        "--pool-size", type=int, default=20, help="asyncpg pool size (default: %(default)s)"
    )
    p.add_argument(
        "--seats-per-row",
        type=int,
        default=20,
        help="seats per row in generated seat maps (default: %(default)s)",
    )
    p.add_argument(
        "--admin-email",
        default="admin@ticketflow.dev",
        help="ADMIN account created at start (default: %(default)s)",
    )
    p.add_argument(
        "--admin-password", default="Admin1234!", help="its password (default: %(default)s)"
    )
    p.add_argument(
        "--log-level", default="warning", help="uvicorn log level (default: %(default)s)"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    service = PlainService(args)
    uvicorn.run(
        create_app(service),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
