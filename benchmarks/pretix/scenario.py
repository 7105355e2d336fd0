"""The on-sale scenario against pretix's REST API, with the same buyers, seats and figures.

Why ~430 lines in one module: the set-up, the order run and the checks all speak pretix's REST
API with one client and one seat mapping; split, each part would pass both around.

`PretixOnsaleRun` is `benchmarks.onsale.OnsaleRun` with pretix's calls in place of TicketFlow's;
the workers, the shared view of the seats, retries, the stop conditions and the report are the
same code. What differs, and why:

- **Set-up (not timed)** through the REST API with the bootstrap's team token: a seating plan with
  TicketFlow's rows and tiers (`domain.seating.generate_layout`, 20 seats a row, VIP rows first,
  seat GUIDs equal to TicketFlow's seat ids), an event on it, one product per tier at TicketFlow's
  prices (250.00 and 75.00 GBP), one quota per product of the tier's size, and the plan's
  categories mapped to the products (pretix then creates one `Seat` per plan seat). No buyer
  accounts: pretix's orders carry an email address, not a login.
- **A booking** is one `POST /api/v1/organizers/{o}/events/{e}/orders/` with one position per
  seat (`item`, `seat`), `status: "p"` with `payment_provider: "manual"` (paid, the payment taken
  elsewhere: pretix has no card charge of its own in this path) and `send_email: false`, and
  without `force`, so pretix checks seat availability and quotas under its locks. pretix answers
  synchronously: 201 is a confirmed booking; 400 with every position error being "seat not
  available" or "not enough quota" counts as `SEATS_UNAVAILABLE`, anything else as an error
  (`409 LOCK_TIMEOUT` when pretix's advisory locks were not granted within its 3 s). The answer's
  latency goes in both the "202 latency" (the server's answer to the booking request) and, for a
  201, the confirmed end-to-end latency: there is nothing to poll.
- **The view's refresh** reads `GET .../seats/?is_available=true` (all pages of 50); sold out is
  no seat available.
- **The checks**, from pretix's own data (`GET .../orders/`, all pages): a seat in two positions
  of pending or paid orders is oversold; a pending order is stuck (every order is created paid);
  seats taken according to `.../seats/?is_available=false` minus seats of paid orders must be 0;
  paid orders the client never saw confirmed may only be requests it gave up on (timeouts).
  There are no charges to check (the payment is a record in the order's own transaction).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from benchmarks.httpclient import HttpClient, open_client
from benchmarks.onsale import (
    BookingRecord,
    Buyer,
    OnsaleConfig,
    OnsaleRun,
    SeatInfo,
    SeatView,
    SetupError,
    drive,
    iso_utc,
)
from domain.seating import TicketTier, generate_layout

# TicketFlow's tiers as the on-sale scenario creates them (benchmarks/onsale.py), in minor units.
TIER_PRICES = {"VIP": 25000, "GENERAL": 7500}
SEATS_PER_ROW = 20  # TicketFlow's default `seats_per_row`
PAGE_SIZE = 50  # pretix's max_page_size (pretix/api/pagination.py)
UNAVAILABLE_MESSAGES = ("is not available", "not enough quota available")


def layout_tiers(seats: int, vip_fraction: float) -> list[TicketTier]:
    """The tiers the TicketFlow scenario creates for `seats` (same rounding)."""
    vip = min(round(seats * vip_fraction), seats - 1)
    tiers = []
    if vip:
        tiers.append(TicketTier("VIP", TIER_PRICES["VIP"], "GBP", vip))
    tiers.append(TicketTier("GENERAL", TIER_PRICES["GENERAL"], "GBP", seats - vip))
    return tiers


def seating_plan(seats: int, vip_fraction: float, name: str) -> dict[str, Any]:
    """A pretix seating plan layout (pretix/static/seating/seating-plan.schema.json) with
    TicketFlow's rows: one zone, a row per TicketFlow row, categories named after the tiers."""
    tiers = layout_tiers(seats, vip_fraction)
    rows: list[dict[str, Any]] = []
    for seat in generate_layout(tiers, seats_per_row=SEATS_PER_ROW):
        if not rows or rows[-1]["row_number"] != seat.row:
            rows.append(
                {"row_number": seat.row, "position": {"x": 0, "y": 30 * len(rows)}, "seats": []}
            )
        rows[-1]["seats"].append(
            {
                "seat_guid": seat.id,
                "seat_number": str(seat.number),
                "category": seat.tier,
                "position": {"x": 25 * seat.number, "y": 0},
            }
        )
    return {
        "name": name,
        "categories": [{"name": t.tier, "color": "#336699"} for t in tiers],
        "zones": [{"name": "Stalls", "position": {"x": 0, "y": 0}, "rows": rows}],
        "size": {"width": 25 * (SEATS_PER_ROW + 2), "height": 30 * (len(rows) + 1)},
    }


def refused_as_unavailable(body: Any) -> bool:
    """Whether a 400 from pretix's order creation says only that seats or quota ran out."""
    if (
        not isinstance(body, dict)
        or set(body) != {"positions"}
        or not isinstance(body["positions"], list)
    ):
        return False
    messages = [
        str(message)
        for errors in body["positions"]
        if isinstance(errors, dict)
        for field, values in errors.items()
        if field in ("seat", "item")
        for message in (values if isinstance(values, list) else [values])
    ]
    other_fields = any(
        isinstance(errors, dict) and set(errors) - {"seat", "item"} for errors in body["positions"]
    )
    return (
        bool(messages)
        and not other_fields
        and all(any(m in message for m in UNAVAILABLE_MESSAGES) for message in messages)
    )


def _price(minor: int) -> str:
    return f"{minor // 100}.{minor % 100:02d}"


class PretixOnsaleRun(OnsaleRun):
    """The on-sale scenario against pretix (see the module docstring)."""

    def __init__(
        self, config: OnsaleConfig, client: HttpClient, *, organizer: str, token: str
    ) -> None:
        super().__init__(config, client)
        self.organizer = organizer
        self.api_token = token
        self.event_slug = f"bench{self.run_id}"
        self.item_of_seat: dict[str, int] = {}
        self._refused = 0

    @property
    def event_api(self) -> str:
        return f"/api/v1/organizers/{self.organizer}/events/{self.event_slug}"

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
        """As OnsaleRun.call, with the team's API token (pretix's `Authorization: Token ...`)."""
        del token  # buyers have no accounts in pretix; every call is the integration's
        headers = {**(headers or {}), "Authorization": f"Token {self.api_token}"}
        return await super().call(
            method, path, json=json, params=params, count=count, headers=headers
        )

    def record_error(self, status: int, body: Any) -> None:
        if status == 409:
            self.stats.errors["409 LOCK_TIMEOUT"] += 1
        elif status == 400:
            self.stats.errors["400 ORDER_REFUSED"] += 1
        else:
            self.stats.errors[str(status)] += 1

    async def _post(
        self, path: str, body: dict[str, Any], what: str, method: str = "POST"
    ) -> dict[str, Any]:
        status, answer = await self.setup_call(method, path, json=body)
        if status not in (200, 201) or not isinstance(answer, dict):
            raise SetupError(f"pretix: {what} failed: {status} {answer}")
        return answer

    async def _all_pages(
        self, path: str, params: dict[str, Any], *, count: bool
    ) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        page = 1
        while True:
            status, body, _ = await self.call(
                "GET", path, params={**params, "page": page, "page_size": PAGE_SIZE}, count=count
            )
            if status != 200 or not isinstance(body, dict):
                raise SetupError(f"pretix: GET {path} failed: {status} {body}")
            items += body["results"]
            if not body.get("next"):
                return items
            page += 1

    # -- set-up -------------------------------------------------------------------------------
    async def setup(self) -> dict[str, Any]:
        t0 = time.perf_counter()
        cfg = self.cfg
        org = f"/api/v1/organizers/{self.organizer}"
        plan = await self._post(
            f"{org}/seatingplans/",
            {
                "name": f"Bench Arena {self.run_id}",
                "layout": seating_plan(cfg.seats, cfg.vip_fraction, "Bench Arena"),
            },
            "seating plan creation",
        )
        starts = datetime.now(UTC) + timedelta(days=60)
        await self._post(
            f"{org}/events/",
            {
                "name": {"en": f"On-sale benchmark {self.run_id}"},
                "slug": self.event_slug,
                "currency": "GBP",
                "date_from": iso_utc(starts),
                "date_to": iso_utc(starts + timedelta(hours=3)),
                "seating_plan": plan["id"],
            },
            "event creation",
        )
        item_of_tier: dict[str, int] = {}
        for tier in layout_tiers(cfg.seats, cfg.vip_fraction):
            item = await self._post(
                f"{self.event_api}/items/",
                {
                    "name": {"en": tier.tier},
                    "default_price": _price(tier.price),
                    "admission": True,
                    "active": True,
                    "personalized": False,
                },
                f"product {tier.tier}",
            )
            item_of_tier[tier.tier] = int(item["id"])
            await self._post(
                f"{self.event_api}/quotas/",
                {
                    "name": tier.tier,
                    "size": tier.capacity,
                    "items": [item["id"]],
                    "variations": [],
                },
                f"quota {tier.tier}",
            )
        # Mapping the plan's categories to the products makes pretix create the seats.
        await self._post(
            f"{self.event_api}/",
            {"seat_category_mapping": item_of_tier},
            "seat category mapping",
            method="PATCH",
        )
        seats = await self._all_pages(f"{self.event_api}/seats/", {}, count=False)
        tier_of_item = {v: k for k, v in item_of_tier.items()}
        infos = []
        for s in seats:
            if s.get("product") not in tier_of_item:
                raise SetupError(
                    f"pretix: seat {s.get('seat_guid')} has no product of the scenario"
                )
            self.item_of_seat[str(s["seat_guid"])] = int(s["product"])
            infos.append(SeatInfo(str(s["seat_guid"]), str(s["row_name"]), int(s["seat_number"])))
        if len(infos) != cfg.seats:
            raise SetupError(f"pretix created {len(infos)} seats, the scenario has {cfg.seats}")
        self.event_id = self.event_slug
        self.total_seats = len(infos)
        self.view = SeatView(infos, self.rng)
        self.buyers = [Buyer(i, f"bench-{self.run_id}-{i}@example.com") for i in range(cfg.buyers)]
        return {
            "event_id": self.event_slug,
            "organizer": self.organizer,
            "seating_plan": plan["id"],
            "items": item_of_tier,
            "seats": self.total_seats,
            "buyers": len(self.buyers),
            "event_setup_s": round(time.perf_counter() - t0, 2),
            "buyers_setup_s": 0.0,
        }

    # -- the booking phase ----------------------------------------------------------------------
    async def refresh_view(self) -> None:
        assert self.view is not None
        async with self._refresh_lock:
            if len(self.view) > 0 or self.stop.is_set():
                return
            wait = 0.2 - (time.perf_counter() - self._last_refresh)
            if wait > 0:
                await asyncio.sleep(wait)
            self._last_refresh = time.perf_counter()
            self.stats.refreshes += 1
            try:
                free = await self._all_pages(
                    f"{self.event_api}/seats/", {"is_available": "true"}, count=True
                )
            except SetupError:
                self.stats.errors["refresh failed"] += 1
                return
            if not free:
                self._mark_sold_out()
                return
            self.view.reset(str(s["seat_guid"]) for s in free)

    async def book(self, buyer: Buyer, seat_ids: list[str]) -> str:
        """One order: confirmed (201), SEATS_UNAVAILABLE (400 for seats or quota), or ERROR."""
        first = self.first_wave.admit()
        t0 = time.perf_counter()
        status, body, _ = await self.call(
            "POST",
            f"{self.event_api}/orders/",
            json={
                "status": "p",
                "payment_provider": "manual",
                "email": buyer.email,
                "locale": "en",
                "sales_channel": "web",
                "send_email": False,
                "positions": [{"item": self.item_of_seat[s], "seat": s} for s in seat_ids],
            },
        )
        elapsed = time.perf_counter() - t0
        confirmed = status == 201 and isinstance(body, dict) and "code" in body
        refused = status == 400 and refused_as_unavailable(body)
        if first and (confirmed or refused):  # an order's answer is final: both figures are one
            self.first_wave.lat_202.append(elapsed)
            if confirmed:
                self.first_wave.lat_e2e_confirmed.append(elapsed)
        if confirmed:
            assert isinstance(body, dict)
            self.stats.lat_202.append(elapsed)
            self.stats.bookings_posted += 1
            self.stats.lat_e2e.append(elapsed)
            self.stats.lat_e2e_confirmed.append(elapsed)
            self.bookings[str(body["code"])] = BookingRecord(
                buyer.index, seat_ids, status="CONFIRMED"
            )
            return "CONFIRMED"
        if refused:
            self.stats.lat_202.append(elapsed)
            self.stats.bookings_posted += 1
            self.stats.lat_e2e.append(elapsed)
            self._refused += 1
            self.bookings[f"refused-{self._refused}"] = BookingRecord(
                buyer.index,
                seat_ids,
                status="FAILED",
                failure_reason="SEATS_UNAVAILABLE",
            )
            return "SEATS_UNAVAILABLE"
        self.record_error(status, body)
        return "ERROR"

    # -- the checks ---------------------------------------------------------------------------
    async def checks(self) -> dict[str, Any]:
        t0 = time.perf_counter()
        orders = await self._all_pages(f"{self.event_api}/orders/", {}, count=False)
        holders: Counter[str] = Counter()
        paid = pending = paid_seats = 0
        for order in orders:
            if order["status"] not in ("n", "p"):
                continue
            pending += order["status"] == "n"
            paid += order["status"] == "p"
            for position in order["positions"]:
                if position.get("canceled") or not position.get("seat"):
                    continue
                holders[str(position["seat"]["seat_guid"])] += 1
                paid_seats += order["status"] == "p"
        taken = await self._all_pages(
            f"{self.event_api}/seats/", {"is_available": "false"}, count=False
        )
        oversold = sum(1 for n in holders.values() if n > 1)
        unseen = paid - self.stats.confirmed
        gave_up = sum(n for kind, n in self.stats.errors.items() if kind.startswith("transport"))
        result: dict[str, Any] = {
            "oversold_seats": oversold,
            "stuck_pending": pending,
            "charges_without_booking": None,
            "confirmed_bookings_server": paid,
            "confirmed_seats_server": paid_seats,
            "inventory_summary": {"taken": len(taken), "seats": self.total_seats},
            "reserved_mismatch": len(taken) - paid_seats,
            # Orders pretix created whose answer the client never saw: requests it gave up on
            # (`--request-timeout`) that pretix still completed. More than those is a real mismatch.
            "orders_unseen_by_client": unseen,
            "client_gave_up": gave_up,
            "failed_bookings": sum(1 for r in self.bookings.values() if r.status == "FAILED"),
            "checks_s": round(time.perf_counter() - t0, 2),
        }
        result["passed"] = (
            oversold == 0
            and pending == 0
            and result["reserved_mismatch"] == 0
            and 0 <= unseen <= gave_up
        )
        return result


async def run_pretix_onsale(config: OnsaleConfig, *, organizer: str, token: str) -> dict[str, Any]:
    """`benchmarks.onsale.run_onsale` against pretix at `config.url`: the same report.

    Raises:
        SetupError: `pick` is best (pretix has no best-available API).
    """
    config.validate()
    if config.pick == "best":
        raise SetupError("pretix has no best-available API: it cannot run --pick best")
    client = open_client(
        config.http_client, config.url, pool=config.concurrency + 4, timeout=config.request_timeout
    )
    try:
        run = PretixOnsaleRun(config, client, organizer=organizer, token=token)
        return await drive(run, config, f"set-up through pretix's REST API ({config.seats} seats)")
    finally:
        await client.aclose()
