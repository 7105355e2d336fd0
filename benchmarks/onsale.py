"""The on-sale spike: many buyers released at once at one event, every seat sold exactly once.

Why ~940 lines in one module: most of it is one run (`OnsaleRun`: set-up, booking phase, checks),
whose phases share the run's state and counters; the report beside it reads exactly that state.

Against any server with TicketFlow's API (TicketFlow itself, or a plain baseline service):

1. set-up, not timed: log in as ADMIN, create a venue and an event with `seats` seats (VIP and
   GENERAL tiers), read its seat list, register and log in `buyers` buyers (concurrently);
2. the booking phase, timed: `concurrency` workers run booking attempts until the event is sold
   out, `attempts` attempts were made or `duration` seconds passed. An attempt is one buyer
   (attempt number modulo the number of buyers) choosing seats it believes available (random,
   or adjacent in a row), `POST /api/bookings`, polling `GET /api/bookings/:id` until the booking
   is final, and, on FAILED / SEATS_UNAVAILABLE, trying other seats up to `retries` more times.
   What buyers believe is one shared view, seeded from the inventory and updated with every
   outcome (confirmed or unavailable seats drop out of it); when it runs dry it is refreshed
   from the inventory, and the event is sold out when the inventory shows no seat AVAILABLE or
   LOCKED. Conflicts come from concurrent buyers picking the same seats, as in a real rush.
   `pick="best"` names no seats: an attempt asks for 1-4 seats together and the server chooses
   (`benchmarks.best_mode` says how its refusals are judged); `wait=True` sends `Prefer: wait=10`
   on the POST and the GETs instead of polling with backoff. The first `concurrency` POSTs (the
   buyers released at once) are also measured alone, as the first wave (`benchmarks.first_wave`);
3. the checks, from the server's own API: no seat in two CONFIRMED bookings (every buyer's
   `GET /api/bookings/my`), no booking still PENDING after a grace period, no successful charge
   for a FAILED booking (`GET /api/payments/booking/:id`), and the inventory's `reserved` equal
   to the seats of the confirmed bookings.

`run_onsale(OnsaleConfig(...))` returns the report as a JSON-ready dict; `report_markdown` renders it.
"""

from __future__ import annotations

import asyncio
import gc
import os
import random
import secrets
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from benchmarks.best_mode import (
    BEST_QUANTITIES,
    PREFER_WAIT,
    PREFER_WAIT_SECONDS,
    FreshReads,
    InventorySnapshot,
    snapshot_of,
)
from benchmarks.client_health import ClientHealth, freeze_setup_objects
from benchmarks.common import (
    CpuMeter,
    Progress,
    bar,
    burstiness,
    fmt,
    latency_summary,
    log,
    markdown_table,
    timeline,
)
from benchmarks.first_wave import FirstWave
from benchmarks.httpclient import HttpClient, TransportError, open_client

FINAL = {"CONFIRMED", "FAILED", "CANCELLED"}
PICKS = ("random", "adjacent", "best")
TIMELINE_WINDOW_SECONDS = 5.0
BUYER_PASSWORD = "Bench1234!"
DECLINE_TOKEN = "pm_card_chargeDeclined"


@dataclass
class OnsaleConfig:
    """Every knob of the scenario (the command line mirrors these one to one)."""

    url: str
    seats: int = 2000
    vip_fraction: float = 0.1
    buyers: int = 100
    attempts: int = 6000
    concurrency: int = 64
    pick: str = "random"  # "random" | "adjacent" | "best" (a quantity, the server chooses)
    wait: bool = False  # send `Prefer: wait=10` instead of polling with backoff
    seats_per_booking: int = 2
    retries: int = 3
    duration: float = 60.0
    poll_interval: float = 0.02
    poll_max_interval: float = 0.25
    booking_timeout: float = 30.0
    request_timeout: float = 30.0
    grace: float = 15.0
    setup_concurrency: int = 16
    payment_token: str = "pm_card_visa"
    decline_fraction: float = 0.0
    payment_check_sample: int = 200
    admin_email: str = "admin@ticketflow.dev"
    admin_password: str = "Admin1234!"
    label: str = ""
    seed: int | None = None
    progress: bool | None = None  # None: only when stderr is a terminal
    http_client: str = "aiohttp"  # "aiohttp" | "httpx" (see benchmarks/httpclient.py)

    def validate(self) -> None:
        if self.seats < 1 or self.buyers < 1 or self.attempts < 1 or self.concurrency < 1:
            raise ValueError("seats, buyers, attempts and concurrency must be >= 1")
        if not 1 <= self.seats_per_booking <= 10:
            raise ValueError("seats-per-booking must be 1..10 (the API's limit)")
        if self.pick not in PICKS:
            raise ValueError(f"pick must be one of {', '.join(PICKS)}")
        if not 0 <= self.vip_fraction < 1 or not 0 <= self.decline_fraction <= 1:
            raise ValueError("vip-fraction must be in [0, 1) and decline-fraction in [0, 1]")
        if self.retries < 0 or self.duration <= 0:
            raise ValueError("retries must be >= 0 and duration > 0")


# -- what the buyers believe ------------------------------------------------------------------------
@dataclass(frozen=True)
class SeatInfo:
    id: str
    row: str
    number: int


class SeatView:
    """The seats buyers believe available: O(1) random pick, discard and membership."""

    def __init__(self, seats: list[SeatInfo], rng: random.Random) -> None:
        self._rng = rng
        self._by_pos = {(s.row, s.number): s.id for s in seats}
        self._info = {s.id: s for s in seats}
        self._items: list[str] = []
        self._index: dict[str, int] = {}
        self.reset(s.id for s in seats)

    def reset(self, available: Any) -> None:
        self._items = list(available)
        self._index = {s: i for i, s in enumerate(self._items)}

    def __len__(self) -> int:
        return len(self._items)

    def discard(self, seat_ids: list[str]) -> None:
        for seat in seat_ids:
            i = self._index.pop(seat, None)
            if i is None:
                continue
            last = self._items.pop()
            if i < len(self._items):
                self._items[i] = last
                self._index[last] = i

    def pick(self, k: int, adjacent: bool) -> list[str]:
        k = min(k, len(self._items))
        if k == 0:
            return []
        if adjacent:
            for _ in range(8):
                seats = self._adjacent_from(self._rng.choice(self._items), k)
                if len(seats) == k:
                    return seats
        return self._rng.sample(self._items, k)

    def _adjacent_from(self, start: str, k: int) -> list[str]:
        info = self._info[start]
        seats = [start]
        for step in (1, -1):
            n = info.number + step
            while len(seats) < k:
                seat = self._by_pos.get((info.row, n))
                if seat is None or seat not in self._index:
                    break
                seats.append(seat)
                n += step
        return sorted(seats, key=lambda s: self._info[s].number)


# -- the run ----------------------------------------------------------------------------------------
@dataclass
class BookingRecord:
    buyer: int
    seat_ids: list[str]
    status: str = "PENDING"
    failure_reason: str | None = None
    payment_id: str | None = None


@dataclass
class Buyer:
    index: int
    email: str
    token: str = ""


@dataclass
class _Stats:
    requests: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    lat_202: list[float] = field(default_factory=list)
    sent_202: list[float] = field(default_factory=list)  # when each of lat_202's POSTs was sent
    lat_e2e: list[float] = field(default_factory=list)
    lat_e2e_confirmed: list[float] = field(default_factory=list)
    attempts: int = 0
    bookings_posted: int = 0
    retries: int = 0
    confirmed: int = 0
    confirmed_seats: int = 0
    in_flight: int = 0
    refreshes: int = 0
    answered_final: int = 0  # POSTs answered 200 with the final booking (Prefer: wait)
    unavailable_checked: int = 0  # best mode: SEATS_UNAVAILABLE refusals checked
    unavailable_while_enough: int = 0  # ... of which the inventory still showed a fitting block


class SetupError(RuntimeError):
    """The scenario could not be prepared (server unreachable, wrong admin credentials, ...)."""


class OnsaleRun:
    def __init__(self, config: OnsaleConfig, client: HttpClient) -> None:
        self.cfg = config
        self.http = client
        self.rng = random.Random(config.seed)
        self.run_id = secrets.token_hex(4)
        self.stats = _Stats()
        self.bookings: dict[str, BookingRecord] = {}
        self.buyers: list[Buyer] = []
        self.event_id = ""
        self.total_seats = 0
        self.view: SeatView | None = None
        self.stop = asyncio.Event()
        self.sold_out_at: float | None = None
        self.phase_start = 0.0
        self._next_attempt = 0
        self._refresh_lock = asyncio.Lock()
        self._last_refresh = 0.0
        self._admin_token = ""
        self.inventory_reads = FreshReads(self._read_inventory)
        self.first_wave = FirstWave(config.concurrency)

    # -- HTTP ---------------------------------------------------------------------------------
    async def call(
        self,
        method: str,
        path: str,
        *,
        token: str = "",
        json: Any = None,
        params: dict[str, Any] | None = None,
        count: bool = True,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, Any, Mapping[str, str] | None]:
        """One request; (0, None, None) on a transport error, which is counted by its kind."""
        if count:
            self.stats.requests += 1
        if token:
            headers = {**(headers or {}), "Authorization": f"Bearer {token}"}
        try:
            return await self.http.request(
                method, path, json_body=json, params=params, headers=headers
            )
        except TransportError as exc:
            if count:
                self.stats.errors[f"transport {exc.kind}"] += 1
            return 0, None, None

    def record_error(self, status: int, body: Any) -> None:
        code = ""
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            code = str(body["error"].get("code", ""))
        self.stats.errors[f"{status} {code}".strip()] += 1

    async def setup_call(
        self,
        method: str,
        path: str,
        *,
        token: str = "",
        json: Any = None,
        params: dict[str, Any] | None = None,
    ) -> tuple[int, Any]:
        """A set-up request: waits out 429s (Retry-After) and retries transport errors a few times."""
        for _ in range(20):
            status, body, headers = await self.call(
                method, path, token=token, json=json, params=params, count=False
            )
            if status == 429:
                wait = float(headers.get("retry-after", "1")) if headers is not None else 1.0
                log(
                    f"set-up: 429 RATE_LIMITED on {path}; waiting {wait:.0f} s (disable rate limits for benchmarks)"
                )
                await asyncio.sleep(min(wait, 60.0))
                continue
            if status in (0, 502, 503, 504):
                await asyncio.sleep(0.5)
                continue
            return status, body
        raise SetupError(f"{method} {path} kept failing")

    # -- set-up -------------------------------------------------------------------------------
    async def setup(self) -> dict[str, Any]:
        t0 = time.perf_counter()
        cfg = self.cfg
        status, body = await self.setup_call(
            "POST",
            "/api/users/login",
            json={
                "email": cfg.admin_email,
                "password": cfg.admin_password,
            },
        )
        if status != 200:
            raise SetupError(f"admin login failed: {status} {body}")
        self._admin_token = str(body["token"])
        status, body = await self.setup_call(
            "POST",
            "/api/venues",
            token=self._admin_token,
            json={
                "name": f"Bench Arena {self.run_id}",
                "address": "1 Benchmark Road",
                "city": "London",
                "country": "GB",
                "capacity": cfg.seats,
            },
        )
        if status != 201:
            raise SetupError(f"venue creation failed: {status} {body}")
        venue_id = str(body["id"])
        vip = min(round(cfg.seats * cfg.vip_fraction), cfg.seats - 1)
        tiers = []
        if vip:
            tiers.append({"tier": "VIP", "price": 25000, "currency": "GBP", "capacity": vip})
        tiers.append(
            {"tier": "GENERAL", "price": 7500, "currency": "GBP", "capacity": cfg.seats - vip}
        )
        starts = datetime.now(UTC) + timedelta(days=60)
        status, body = await self.setup_call(
            "POST",
            "/api/events",
            token=self._admin_token,
            json={
                "name": f"On-sale benchmark {self.run_id}",
                "description": "ticketflow bench onsale",
                "venueId": venue_id,
                "startsAt": iso_utc(starts),
                "endsAt": iso_utc(starts + timedelta(hours=3)),
                "ticketTiers": tiers,
            },
        )
        if status != 201:
            raise SetupError(f"event creation failed: {status} {body}")
        self.event_id = str(body["id"])
        status, body = await self.setup_call("GET", f"/api/inventory/events/{self.event_id}/seats")
        if status != 200:
            raise SetupError(f"inventory read failed: {status} {body}")
        seats = [SeatInfo(s["id"], s["row"], int(s["number"])) for s in body["seats"]]
        self.total_seats = len(seats)
        self.view = SeatView(seats, self.rng)
        created_at = time.perf_counter()
        await self._prepare_buyers()
        return {
            "event_id": self.event_id,
            "venue_id": venue_id,
            "seats": self.total_seats,
            "buyers": len(self.buyers),
            "event_setup_s": round(created_at - t0, 2),
            "buyers_setup_s": round(time.perf_counter() - created_at, 2),
        }

    async def _prepare_buyers(self) -> None:
        cfg = self.cfg
        self.buyers = [Buyer(i, f"bench-{self.run_id}-{i}@example.com") for i in range(cfg.buyers)]
        sem = asyncio.Semaphore(cfg.setup_concurrency)
        done = 0
        progress = Progress(enabled=cfg.progress)

        async def prepare(buyer: Buyer) -> None:
            nonlocal done
            async with sem:
                status, body = await self.setup_call(
                    "POST",
                    "/api/users/register",
                    json={
                        "name": f"Bench Buyer {buyer.index}",
                        "email": buyer.email,
                        "password": BUYER_PASSWORD,
                    },
                )
                if status not in (201, 409):
                    raise SetupError(f"registering {buyer.email} failed: {status} {body}")
                status, body = await self.setup_call(
                    "POST",
                    "/api/users/login",
                    json={
                        "email": buyer.email,
                        "password": BUYER_PASSWORD,
                    },
                )
                if status != 200:
                    raise SetupError(f"logging {buyer.email} in failed: {status} {body}")
                buyer.token = str(body["token"])
                done += 1

        progress.start(lambda: f"set-up: buyers {bar(done / cfg.buyers)} {done}/{cfg.buyers}")
        try:
            await asyncio.gather(*(prepare(b) for b in self.buyers))
        finally:
            await progress.stop(
                lambda: f"set-up: buyers {bar(done / cfg.buyers)} {done}/{cfg.buyers}"
            )

    # -- the booking phase ----------------------------------------------------------------------
    def elapsed(self) -> float:
        return time.perf_counter() - self.phase_start

    def _mark_sold_out(self) -> None:
        if self.sold_out_at is None:
            self.sold_out_at = self.elapsed()
        self.stop.set()

    async def refresh_view(self) -> None:
        """Re-reads the inventory when the shared view ran dry (one reader at a time)."""
        assert self.view is not None
        async with self._refresh_lock:
            if len(self.view) > 0 or self.stop.is_set():
                return
            wait = 0.2 - (time.perf_counter() - self._last_refresh)
            if wait > 0:
                await asyncio.sleep(wait)
            self._last_refresh = time.perf_counter()
            self.stats.refreshes += 1
            status, body, _ = await self.call("GET", f"/api/inventory/events/{self.event_id}/seats")
            if status != 200:
                self.record_error(status, body)
                return
            summary = body["summary"]
            if summary["available"] == 0 and summary["locked"] == 0:
                self._mark_sold_out()
                return
            self.view.reset(s["id"] for s in body["seats"] if s["status"] == "AVAILABLE")

    async def pick(self) -> list[str] | None:
        assert self.view is not None
        while not self.stop.is_set():
            if self.elapsed() > self.cfg.duration:
                self.stop.set()
                return None
            seats = self.view.pick(self.cfg.seats_per_booking, self.cfg.pick == "adjacent")
            if seats:
                return seats
            await self.refresh_view()
            if len(self.view) == 0 and not self.stop.is_set():
                await asyncio.sleep(
                    0.05
                )  # everything left is locked: wait for those bookings to end
        return None

    async def book(self, buyer: Buyer, seat_ids: list[str]) -> str:
        """One booking of named seats, to its end: CONFIRMED, a failure reason, or ERROR/TIMEOUT."""
        outcome, _record = await self.post_booking(buyer, {"seatIds": seat_ids}, seat_ids)
        return outcome

    async def post_booking(
        self, buyer: Buyer, request: dict[str, Any], seat_ids: list[str]
    ) -> tuple[str, BookingRecord | None]:
        """POST a booking (`request`: its seatIds, or quantity and together) and follow it to its
        end. Returns the outcome (CONFIRMED, a failure reason, or ERROR/TIMEOUT) and its record
        (None when nothing was booked), whose seats are the ones the server shows at the end."""
        cfg = self.cfg
        token = cfg.payment_token
        if cfg.decline_fraction and self.rng.random() < cfg.decline_fraction:
            token = DECLINE_TOKEN
        first = self.first_wave.admit()
        t0 = time.perf_counter()
        status, body, _ = await self.call(
            "POST",
            "/api/bookings",
            token=buyer.token,
            json={
                "eventId": self.event_id,
                **request,
                "paymentMethod": {"type": "card", "token": token},
            },
            headers=PREFER_WAIT if cfg.wait else None,
        )
        # With `Prefer: wait`, a booking final within the wait comes back whole (200); else 202.
        final = (
            cfg.wait
            and status == 200
            and isinstance(body, dict)
            and body.get("status") in FINAL
            and "id" in body
        )
        if final:
            booking_id = str(body["id"])
            self.stats.answered_final += 1
        elif status == 202 and isinstance(body, dict) and "bookingId" in body:
            booking_id = str(body["bookingId"])
        else:
            self.record_error(status, body)
            return "ERROR", None
        self.stats.lat_202.append(time.perf_counter() - t0)
        self.stats.sent_202.append(t0 - self.phase_start)
        if first:
            self.first_wave.lat_202.append(self.stats.lat_202[-1])
        self.stats.bookings_posted += 1
        record = BookingRecord(buyer.index, list(seat_ids))
        self.bookings[booking_id] = record
        if not final:
            body = await self._follow(buyer, booking_id, t0)
            if body is None:
                return "TIMEOUT", record
        end = time.perf_counter() - t0
        record.status = str(body["status"])
        record.failure_reason = body.get("failureReason")
        record.payment_id = body.get("paymentId")
        record.seat_ids = [str(s) for s in body.get("seatIds") or seat_ids]
        self.stats.lat_e2e.append(end)
        if record.status == "CONFIRMED":
            self.stats.lat_e2e_confirmed.append(end)
            if first:
                self.first_wave.lat_e2e_confirmed.append(end)
            return "CONFIRMED", record
        return str(record.failure_reason or record.status), record

    async def _follow(self, buyer: Buyer, booking_id: str, t0: float) -> dict[str, Any] | None:
        """GET the booking until it is final: polls with backoff, or (`--wait`) asks the server to
        answer when it is final (`Prefer: wait=10`), again at once if it is still PENDING. None
        after `booking_timeout` (counted as a client TIMEOUT)."""
        cfg = self.cfg
        delay = cfg.poll_interval
        while True:
            if not cfg.wait:
                await asyncio.sleep(delay)
                delay = min(delay * 1.5, cfg.poll_max_interval)
            if time.perf_counter() - t0 > cfg.booking_timeout:
                self.stats.errors["client TIMEOUT"] += 1
                return None
            asked = time.perf_counter()
            status, body, headers = await self.call(
                "GET",
                f"/api/bookings/{booking_id}",
                token=buyer.token,
                headers=PREFER_WAIT if cfg.wait else None,
            )
            if status == 200 and isinstance(body, dict):
                if body.get("status") in FINAL:
                    return body
                if cfg.wait and time.perf_counter() - asked < 0.9 * PREFER_WAIT_SECONDS:
                    # PENDING before the wait ran out: the server did not wait (a preference
                    # may be ignored, RFC 7240), so poll with backoff rather than spin.
                    await asyncio.sleep(delay)
                    delay = min(delay * 1.5, cfg.poll_max_interval)
                continue
            self.record_error(status, body)
            if status == 429 and headers is not None:
                delay = max(delay, float(headers.get("retry-after", "1")))
            if cfg.wait:  # an error is not a wait: back off as a poll would
                await asyncio.sleep(delay)
                delay = min(delay * 1.5, cfg.poll_max_interval)

    async def attempt(self, buyer: Buyer) -> None:
        if self.cfg.pick == "best":
            await self.attempt_best(buyer)
            return
        assert self.view is not None
        for try_no in range(self.cfg.retries + 1):
            seats = await self.pick()
            if seats is None:
                return
            if try_no:
                self.stats.retries += 1
            self.stats.in_flight += 1
            try:
                outcome = await self.book(buyer, seats)
            finally:
                self.stats.in_flight -= 1
            self.stats.outcomes[outcome] += 1
            if outcome == "CONFIRMED":
                self.view.discard(seats)
                self.stats.confirmed += 1
                self.stats.confirmed_seats += len(seats)
                if self.stats.confirmed_seats >= self.total_seats:
                    self._mark_sold_out()
                return
            if outcome != "SEATS_UNAVAILABLE" or self.stop.is_set():
                return
            self.view.discard(seats)

    async def attempt_best(self, buyer: Buyer) -> None:
        """Best available: a random quantity, together; the server chooses the seats. After a
        SEATS_UNAVAILABLE the buyer looks at the inventory (a read started after the refusal, see
        `benchmarks.best_mode`) and asks again for at most the largest block it shows."""
        quantity = self.rng.randint(*BEST_QUANTITIES)
        for try_no in range(self.cfg.retries + 1):
            if self.stop.is_set():
                return
            if self.elapsed() > self.cfg.duration:
                self.stop.set()
                return
            if try_no:
                self.stats.retries += 1
            self.stats.in_flight += 1
            try:
                outcome, record = await self.post_booking(
                    buyer, {"quantity": quantity, "together": True}, []
                )
            finally:
                self.stats.in_flight -= 1
            self.stats.outcomes[outcome] += 1
            if outcome == "CONFIRMED" and record is not None:
                self.stats.confirmed += 1
                self.stats.confirmed_seats += len(record.seat_ids)
                if self.stats.confirmed_seats >= self.total_seats:
                    self._mark_sold_out()
                return
            if outcome != "SEATS_UNAVAILABLE" or self.stop.is_set():
                return
            seen = await self.inventory_reads.fresh()
            if seen is None:
                return
            self.stats.unavailable_checked += 1
            if seen.fits(quantity, together=True):
                self.stats.unavailable_while_enough += 1
            if seen.sold_out:
                self._mark_sold_out()
                return
            if seen.largest_block == 0:
                await asyncio.sleep(0.05)  # everything left is locked: wait for those bookings
            else:
                quantity = min(quantity, seen.largest_block)

    async def _read_inventory(self) -> InventorySnapshot | None:
        """The inventory as best mode's checks see it (not a buyer's request: not counted)."""
        status, body, _ = await self.call(
            "GET", f"/api/inventory/events/{self.event_id}/seats", count=False
        )
        if status != 200:
            self.record_error(status, body)
        return snapshot_of(body) if status == 200 else None

    async def worker(self) -> None:
        while not self.stop.is_set():
            if self._next_attempt >= self.cfg.attempts:
                return
            if self.elapsed() > self.cfg.duration:
                self.stop.set()
                return
            n = self._next_attempt
            self._next_attempt += 1
            self.stats.attempts += 1
            await self.attempt(self.buyers[n % len(self.buyers)])

    def progress_line(self) -> str:
        s = self.stats
        t = max(self.elapsed(), 1e-9)
        sold = s.confirmed_seats / self.total_seats if self.total_seats else 0.0
        return (
            f"onsale {bar(sold)} sold {s.confirmed_seats}/{self.total_seats} | {s.confirmed / t:.0f} conf/s | "
            f"attempts {s.attempts}/{self.cfg.attempts} | in flight {s.in_flight} | "
            f"errors {sum(s.errors.values())} | {t:.1f} s"
        )

    async def booking_phase(self) -> dict[str, Any]:
        progress = Progress(enabled=self.cfg.progress)
        cpu = CpuMeter()
        cpu.start()
        load_start = os.getloadavg()[0]
        self.phase_start = time.perf_counter()
        progress.start(self.progress_line)
        try:
            await asyncio.gather(*(self.worker() for _ in range(self.cfg.concurrency)))
        finally:
            await progress.stop(self.progress_line)
        phase = self.elapsed()
        s = self.stats
        failed = {k: v for k, v in s.outcomes.items() if k not in ("CONFIRMED", "ERROR", "TIMEOUT")}
        return {
            "duration_s": round(phase, 3),
            "attempts": s.attempts,
            "bookings_posted": s.bookings_posted,
            "retries": s.retries,
            "confirmed": s.confirmed,
            "confirmed_seats": s.confirmed_seats,
            "failed": dict(sorted(failed.items())),
            "confirmed_per_s": round(s.confirmed / phase, 1) if phase > 0 else None,
            "sold_out": self.sold_out_at is not None,
            "time_to_sell_out_s": round(self.sold_out_at, 3)
            if self.sold_out_at is not None
            else None,
            "http_requests": s.requests,
            "http_requests_per_s": round(s.requests / phase, 1) if phase > 0 else None,
            "http_requests_per_confirmed": round(s.requests / s.confirmed, 2)
            if s.confirmed
            else None,
            "answered_final": s.answered_final,
            # Best mode only (None otherwise): SEATS_UNAVAILABLE while a fitting block was shown.
            "unavailable_while_enough": s.unavailable_while_enough
            if self.cfg.pick == "best"
            else None,
            "unavailable_checked": s.unavailable_checked if self.cfg.pick == "best" else None,
            "inventory_reads_for_checks": self.inventory_reads.reads,
            "latency_202_ms": latency_summary(s.lat_202),
            # The same over the phase, window by window: a tail that is one moment (the opening,
            # say) shows as one window.
            "latency_202_timeline": timeline(s.sent_202, s.lat_202, TIMELINE_WINDOW_SECONDS),
            # How bunched the bookings came (the room admits in rounds; paced arrivals do not).
            "posts_per_100ms": burstiness(s.sent_202, 0.1),
            "latency_e2e_ms": latency_summary(s.lat_e2e),
            "latency_e2e_confirmed_ms": latency_summary(s.lat_e2e_confirmed),
            # The same two for the first `concurrency` POSTs alone (benchmarks.first_wave).
            "first_wave": self.first_wave.summary(),
            "errors": dict(sorted(s.errors.items())),
            "inventory_refreshes": s.refreshes,
            **cpu.stop(),
            # The machine's 1-minute load average around the phase: other work running shows here.
            "loadavg_1m": [round(load_start, 2), round(os.getloadavg()[0], 2)],
        }

    # -- the checks ---------------------------------------------------------------------------
    async def _list_mine(self, buyer: Buyer, status: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        page = 1
        while True:
            code, body = await self.setup_call(
                "GET",
                "/api/bookings/my",
                token=buyer.token,
                params={"status": status, "page": page, "perPage": 100},
            )
            if code != 200:
                raise SetupError(f"GET /api/bookings/my failed: {code} {body}")
            items += [b for b in body["data"] if b.get("eventId") == self.event_id]
            if page >= int(body["pagination"]["totalPages"] or 0):
                return items
            page += 1

    async def _gather_limited(self, coros: list[Any], limit: int = 16) -> list[Any]:
        sem = asyncio.Semaphore(limit)

        async def one(c: Any) -> Any:
            async with sem:
                return await c

        return list(await asyncio.gather(*(one(c) for c in coros)))

    async def checks(self) -> dict[str, Any]:
        t0 = time.perf_counter()
        deadline = t0 + self.cfg.grace
        # 1. Nothing may stay PENDING past the grace period (the server's own lists say so).
        while True:
            pending = await self._gather_limited(
                [self._list_mine(b, "PENDING") for b in self.buyers]
            )
            stuck = sum(len(p) for p in pending)
            if stuck == 0 or time.perf_counter() > deadline:
                break
            await asyncio.sleep(0.5)
        # 2. No seat in two CONFIRMED bookings.
        confirmed_lists = await self._gather_limited(
            [self._list_mine(b, "CONFIRMED") for b in self.buyers]
        )
        holders: Counter[str] = Counter()
        confirmed_bookings = 0
        for items in confirmed_lists:
            for b in items:
                confirmed_bookings += 1
                holders.update(b["seatIds"])
        oversold = sum(1 for n in holders.values() if n > 1)
        confirmed_seats = sum(holders.values())
        # 3. The inventory agrees: reserved == the seats of the confirmed bookings.
        code, body = await self.setup_call("GET", f"/api/inventory/events/{self.event_id}/seats")
        summary = body["summary"] if code == 200 else {}
        reserved = summary.get("reserved")
        # 4. No successful charge behind a FAILED booking: every failed booking that shows a payment
        #    or failed after the lock step, plus a random sample of the SEATS_UNAVAILABLE ones.
        failed = [(bid, r) for bid, r in self.bookings.items() if r.status == "FAILED"]
        must = [
            (bid, r) for bid, r in failed if r.payment_id or r.failure_reason != "SEATS_UNAVAILABLE"
        ]
        rest = [
            (bid, r)
            for bid, r in failed
            if not (r.payment_id or r.failure_reason != "SEATS_UNAVAILABLE")
        ]
        sample = self.rng.sample(rest, min(len(rest), self.cfg.payment_check_sample))
        to_check = must + sample

        async def charged(bid: str, r: BookingRecord) -> bool:
            code, body = await self.setup_call(
                "GET", f"/api/payments/booking/{bid}", token=self.buyers[r.buyer].token
            )
            return code == 200 and body.get("status") == "SUCCESS"

        charges = sum(await self._gather_limited([charged(bid, r) for bid, r in to_check]))
        result = {
            "oversold_seats": oversold,
            "stuck_pending": stuck,
            "charges_without_booking": charges,
            "confirmed_bookings_server": confirmed_bookings,
            "confirmed_seats_server": confirmed_seats,
            "inventory_summary": summary,
            "reserved_mismatch": (reserved - confirmed_seats) if reserved is not None else None,
            "failed_bookings_checked_for_charges": len(to_check),
            "failed_bookings": len(failed),
            "checks_s": round(time.perf_counter() - t0, 2),
        }
        result["passed"] = (
            oversold == 0 and stuck == 0 and charges == 0 and result["reserved_mismatch"] == 0
        )
        return result


def iso_utc(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def run_onsale(config: OnsaleConfig, *, client: HttpClient | None = None) -> dict[str, Any]:
    """Runs the whole scenario against `config.url` and returns the report (JSON-ready)."""
    config.validate()
    own_client = client is None
    if client is None:
        pool = max(config.concurrency, config.setup_concurrency) + 4
        client = open_client(
            config.http_client, config.url, pool=pool, timeout=config.request_timeout
        )
    try:
        return await drive(
            OnsaleRun(config, client),
            config,
            f"set-up ({config.seats} seats, {config.buyers} buyers)",
        )
    finally:
        if own_client:
            await client.aclose()


async def drive(run: OnsaleRun, config: OnsaleConfig, setup_note: str) -> dict[str, Any]:
    """A run's three phases (set-up, booking, checks) and its report: the same for every target
    (`benchmarks.pretix.scenario` drives its `OnsaleRun` subclass through here too)."""
    started = datetime.now(UTC)
    label = config.label or config.url
    log(f"onsale [{label}]: {setup_note}")
    setup = await run.setup()
    log(
        f"onsale [{label}]: booking phase ({config.attempts} attempts max, "
        f"concurrency {config.concurrency}, {config.duration:.0f} s max)"
    )
    freeze_setup_objects()
    health = ClientHealth()
    health.start()
    try:
        results = await run.booking_phase()
    finally:
        load_generator = await health.stop()
        gc.unfreeze()
    results["load_generator"] = load_generator
    log(f"onsale [{label}]: checks")
    try:
        checks = await run.checks()
    except SetupError as exc:
        # Keep the measured figures; the checks could not be completed, so they did not pass.
        log(f"onsale [{label}]: checks failed: {exc}")
        checks = {"passed": False, "error": str(exc)}
    params = asdict(config)
    params.pop("admin_password")
    return {
        "benchmark": "onsale",
        "label": label,
        "target": config.url,
        "started_at": iso_utc(started),
        "params": params,
        "setup": setup,
        "results": results,
        "checks": checks,
    }


# -- rendering --------------------------------------------------------------------------------------
def _lag(health: dict[str, Any] | None) -> str | None:
    """The client's own stall, beside the latencies it measured (reports before it have none)."""
    if not health or health["loop_lag_ms"]["n"] == 0:
        return None
    return f"{health['loop_lag_ms']['p99']} / {health['loop_lag_ms']['max']}"


def _gc(health: dict[str, Any] | None) -> str | None:
    if not health:
        return None
    return f"{health['gc_pause_ms']['max'] or 0} / {health['gc_pause_total_ms']}"


def summary_rows(report: dict[str, Any]) -> list[tuple[str, Any]]:
    """(figure, value) pairs shared by the single-run table and the side-by-side comparison."""
    r = report["results"]
    c = report["checks"]
    lat = r["latency_202_ms"]
    e2e = r["latency_e2e_confirmed_ms"]
    # Reports saved before the first wave was measured have none.
    first = r.get("first_wave") or {"latency_202_ms": {}, "latency_e2e_confirmed_ms": {}}
    return [
        ("confirmed bookings/s", r["confirmed_per_s"]),
        ("time to sell out (s)", r["time_to_sell_out_s"]),
        ("sold out", r["sold_out"]),
        ("confirmed bookings", r["confirmed"]),
        (
            "attempts / bookings posted / retries",
            f"{r['attempts']} / {r['bookings_posted']} / {r['retries']}",
        ),
        ("202/200 answer p50 (ms)", lat["p50"]),
        ("202/200 answer p95 (ms)", lat["p95"]),
        ("202/200 answer p99 (ms)", lat["p99"]),
        ("confirmed end-to-end p50 (ms)", e2e["p50"]),
        ("confirmed end-to-end p95 (ms)", e2e["p95"]),
        ("confirmed end-to-end p99 (ms)", e2e["p99"]),
        ("first wave: 202/200 answer p95 (ms)", first["latency_202_ms"].get("p95")),
        ("first wave: confirmed end-to-end p95 (ms)", first["latency_e2e_confirmed_ms"].get("p95")),
        ("HTTP requests/s", r["http_requests_per_s"]),
        ("HTTP requests per confirmed booking", r.get("http_requests_per_confirmed")),
        ("bookings answered final by the POST (200)", r.get("answered_final")),
        ("failed bookings", sum(r["failed"].values())),
        (
            "SEATS_UNAVAILABLE while enough shown (best; target 0)",
            r.get("unavailable_while_enough"),
        ),
        ("errors", sum(r["errors"].values())),
        ("load generator's loop lag p99 / max (ms)", _lag(r.get("load_generator"))),
        ("load generator's GC pauses: max / total (ms)", _gc(r.get("load_generator"))),
        ("oversold seats (must be 0)", c.get("oversold_seats")),
        ("stuck PENDING (must be 0)", c.get("stuck_pending")),
        ("charges without booking (must be 0)", c.get("charges_without_booking")),
        ("reserved - confirmed seats (must be 0)", c.get("reserved_mismatch")),
        ("client CPU utilisation", r["client_cpu_util"]),
    ]


def mode_text(params: dict[str, Any]) -> str:
    """How buyers booked, in words: e.g. "1-4 seats together, best available, Prefer: wait=10"."""
    if params.get("pick") == "best":
        low, high = BEST_QUANTITIES
        text = f"{low}-{high} seats together, best available"
    else:
        text = f"{params['seats_per_booking']} seats per booking ({params['pick']})"
    if params.get("wait"):
        text += f", {PREFER_WAIT['Prefer'].replace('wait', 'Prefer: wait')}"
    else:
        text += ", polled"
    return text


def report_markdown(report: dict[str, Any]) -> str:
    r = report["results"]
    p = report["params"]
    head = (
        f"### On-sale: {report['label']}\n\n"
        f"{p['seats']} seats, {p['buyers']} buyers, up to {p['attempts']} attempts, concurrency "
        f"{p['concurrency']}, {mode_text(p)}, {p['retries']} retries, "
        f"phase {r['duration_s']:.1f} s; first wave: the first {p['concurrency']} POSTs. "
        f"Checks: {'PASSED' if report['checks']['passed'] else 'FAILED'}.\n\n"
    )
    table = markdown_table(
        ["figure", "value"], [(name, fmt(value)) for name, value in summary_rows(report)]
    )
    extra = []
    if "error" in report["checks"]:
        extra.append(f"Checks could not complete: {report['checks']['error']}")
    if r["failed"]:
        extra.append(
            "Failed bookings by reason: " + ", ".join(f"{k} {v}" for k, v in r["failed"].items())
        )
    if r["errors"]:
        extra.append("Errors by code: " + ", ".join(f"{k} {v}" for k, v in r["errors"].items()))
    return head + table + ("\n\n" + "\n\n".join(extra) if extra else "") + "\n"
