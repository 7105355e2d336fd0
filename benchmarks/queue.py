"""`bench onsale --queue N`: the on-sale behind the virtual waiting room (issue 15).

1. Set-up, not timed: the on-sale's event and N buyers (`benchmarks.onsale`), then the event gets
   a waiting room (`admitPerMinute`, or `auto`) and a `salesStartAt` a day away, as an organiser
   announces a sale; every buyer joins the queue (all in the lottery). Then the opening is set to
   just after every buyer's next look (as the join answers said), and the set-up waits for it
   while the buyers look as told (their looks before the opening are counted, not timed).
2. The queued phase, timed from the opening: each buyer looks at its place when the server said
   to (`retryAfterSeconds`; a server without hints: every third of the estimated wait, between
   0.5 and 10 s, with jitter) until ADMITTED or CLOSED. The looks run in a process of their own
   (`benchmarks.waiters`), so that this one times only the bookings; an admitted buyer
   makes one on-sale attempt (`OnsaleRun.attempt`: pick seats, book with its
   `X-Admission-Token`, poll to the end, retry on SEATS_UNAVAILABLE). After the sell-out the
   buyers still waiting go on looking, for at most `tell_seconds`, to learn that it closed.
3. The same checks as the on-sale (no seat sold twice, nothing stuck, no charge kept), then the
   same sale without the room, for its p99 (`benchmarks.paced`): buyers arriving when the
   admitted buyers started their attempts, replayed, one attempt each (the reference of the
   goal); buyers at the same rate evenly spaced (what the arrivals' bunching alone costs); and a
   closed loop of a few buyers at once (never more than those few bookings in flight).

Reported: buyers admitted and the time to admit them (from the opening to the last admission,
read from the tokens' `iat`), the room's closing and how soon those still waiting heard of it,
the place reads (in all, and a second while the sale ran), the booking path's p99 for the
admitted buyers and the unloaded sale's, their ratio, 5xx answers and oversold seats.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from benchmarks.common import log
from benchmarks.httpclient import HttpClient, open_client
from benchmarks.onsale import (
    Buyer,
    OnsaleConfig,
    OnsaleRun,
    SetupError,
    drive,
    iso_utc,
    run_onsale,
)
from benchmarks.paced import even_arrivals, run_paced_onsale
from benchmarks.queue_report import server_errors
from benchmarks.waiters import next_wait, start_line

# The opening comes this long after the last buyer's next look as its join answer gave it.
OPENING_MARGIN_SECONDS = 10.0
# The waiters' process's connections.
LINE_POOL = 64


@dataclass
class QueueConfig:
    buyers: int  # N: every one joins the room, each a user of its own
    admit_per_minute: int | None = None  # None: auto
    baseline_concurrency: int = 4  # the closed-loop reference sale's buyers at once
    baseline: bool = True
    tell_seconds: float = 120.0  # after the sell-out, how long waiters go on looking (to hear it)


@dataclass
class _QueueStats:
    polls: int = 0
    poll_errors: Counter[str] = field(default_factory=Counter)
    admitted_iat: list[int] = field(default_factory=list)
    closed: int = 0
    closed_heard_at: list[float] = field(default_factory=list)  # epoch seconds of each CLOSED
    opened_at: float = 0.0  # epoch seconds of salesStartAt
    poll_times: list[float] = field(default_factory=list)  # epoch seconds of every place read
    joined_late: int = 0  # joins answered after the opening (queued behind the lottery)
    hinted: int = 0  # place answers that said when to look next


def _token_iat(token: str) -> int | None:
    """The admission time an admission token carries (its `iat`)."""
    try:
        body = token.split(".")[1]
        payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        return int(payload["iat"])
    except (IndexError, ValueError, KeyError, TypeError):
        return None


class QueuedOnsaleRun(OnsaleRun):
    """The on-sale run with a waiting room in front of the booking path."""

    def __init__(self, config: OnsaleConfig, client: HttpClient, queue: QueueConfig) -> None:
        super().__init__(config, client)
        self.queue = queue
        self.qstats = _QueueStats()
        self.tickets: dict[int, str] = {}
        self.next_look: dict[int, float] = {}  # buyer -> epoch seconds of its first look
        self._admission: dict[str, str] = {}  # buyer's bearer token -> admission token
        self.arrivals: list[float] = []  # when each admitted buyer started its attempt (phase s)
        self._booking_slots = asyncio.Semaphore(config.concurrency)
        self._line: asyncio.Future[None] | None = None
        self._line_process: asyncio.subprocess.Process | None = None
        self._told = False  # the waiters' time is up (sold out + tell_seconds, or over)
        self._watching = False

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
        """As OnsaleRun.call, with the buyer's admission token on its bookings."""
        if method == "POST" and path == "/api/bookings" and token in self._admission:
            headers = {**(headers or {}), "X-Admission-Token": self._admission[token]}
        return await super().call(
            method, path, token=token, json=json, params=params, count=count, headers=headers
        )

    async def setup(self) -> dict[str, Any]:
        setup = await super().setup()
        t0 = time.perf_counter()
        room = {
            "enabled": True,
            "admitPerMinute": self.queue.admit_per_minute or "auto",
        }
        announced = datetime.now(UTC) + timedelta(days=1)
        await self._update_event({"waitingRoom": room, "salesStartAt": iso_utc(announced)})
        sem = asyncio.Semaphore(self.cfg.setup_concurrency * 4)

        async def join(buyer: Buyer) -> None:
            async with sem:
                status, body, headers = await self.call(
                    "POST", f"/api/events/{self.event_id}/queue", token=buyer.token, count=False
                )
            if status not in (200, 201) or not isinstance(body, dict):
                raise SetupError(f"joining the queue failed: {status} {body}")
            self.tickets[buyer.index] = str(body["ticket"])
            self.next_look[buyer.index] = time.time() + self._next_wait(body, buyer.index)
            if body.get("status") != "WAITING":
                self.qstats.joined_late += 1

        await asyncio.gather(*(join(b) for b in self.buyers))
        joined_s = time.perf_counter() - t0
        # The opening: after everyone's next look, so each is told again how far it is.
        opens = datetime.fromtimestamp(
            max(self.next_look.values(), default=time.time()) + OPENING_MARGIN_SECONDS, UTC
        )
        await self._update_event({"salesStartAt": iso_utc(opens)})
        # iso_utc drops the fraction: the opening is that whole second.
        self.qstats.opened_at = float(int(opens.timestamp()))
        self._line = asyncio.ensure_future(self._follow_the_line())
        # Not timed: the sale starts at its opening; the buyers look meanwhile as they were told.
        await asyncio.sleep(max(0.0, self.qstats.opened_at - time.time()))
        return {
            **setup,
            "queue_joined": len(self.tickets),
            "queue_joined_after_opening": self.qstats.joined_late,
            "queue_setup_s": round(joined_s, 2),
        }

    def _next_wait(self, body: dict[str, Any], seed: int) -> float:
        if body.get("retryAfterSeconds") is not None:
            self.qstats.hinted += 1
        return next_wait(body, random.Random(seed))

    async def _update_event(self, changes: dict[str, Any]) -> None:
        status, body = await self.setup_call(
            "PUT", f"/api/events/{self.event_id}", token=self._admin_token, json=changes
        )
        if status != 200:
            raise SetupError(f"updating the event failed: {status} {body}")

    async def _follow_the_line(self) -> None:
        """Starts the waiters' process (`benchmarks.waiters`: every buyer looks when told, apart
        from this process, which times the bookings) and books for each buyer it reports
        admitted; ends with its figures and the last of those bookings."""
        proc = await start_line(
            {
                "url": self.cfg.url,
                "http_client": self.cfg.http_client,
                "timeout": self.cfg.request_timeout,
                "pool": LINE_POOL,
                "waiters": [
                    [b.index, b.token, self.tickets[b.index], self.next_look[b.index]]
                    for b in self.buyers
                ],
            }
        )
        assert proc.stdout is not None
        self._line_process = proc
        by_index = {b.index: b for b in self.buyers}
        bookings: list[asyncio.Task[None]] = []
        try:
            while True:
                raw = await proc.stdout.readline()
                if not raw:
                    raise RuntimeError(f"the waiters' process ended early ({await proc.wait()})")
                message = json.loads(raw)
                if "admitted" in message:
                    buyer = by_index[int(message["admitted"])]
                    bookings.append(asyncio.create_task(self._book(buyer, message["token"])))
                elif "closed" in message:
                    self.qstats.closed += 1
                    self.qstats.closed_heard_at.append(float(message["at"]))
                elif "stats" in message:
                    self._add_line_stats(message["stats"])
                    break
            await asyncio.gather(*bookings)
        finally:
            self._tell_the_line()
            try:
                await asyncio.wait_for(proc.wait(), timeout=10)
            except TimeoutError:
                proc.kill()
                await proc.wait()

    def _add_line_stats(self, line: dict[str, Any]) -> None:
        q = self.qstats
        q.polls += int(line["polls"])
        q.poll_errors.update({str(k): int(n) for k, n in line["poll_errors"].items()})
        q.poll_times.extend(float(t) for t in line["poll_times"])
        q.hinted += int(line["hinted"])

    async def _book(self, buyer: Buyer, admission_token: str) -> None:
        """An admitted buyer's one on-sale attempt, with its admission token."""
        self.arrivals.append(self.elapsed())
        self._admission[buyer.token] = admission_token
        iat = _token_iat(admission_token)
        if iat is not None:
            self.qstats.admitted_iat.append(iat)
        async with self._booking_slots:
            self.stats.attempts += 1
            await self.attempt(buyer)

    def _tell_the_line(self) -> None:
        """The waiters' time is up: they stop looking and the waiters' process reports."""
        if self._told:
            return
        self._told = True
        proc = self._line_process
        if proc is not None and proc.returncode is None and proc.stdin is not None:
            try:
                proc.stdin.write(b"told\n")
            except (BrokenPipeError, ConnectionResetError):
                pass

    async def _watch_the_time(self) -> None:
        """Ends the waiters' time: `tell_seconds` after the sell-out (so those still in line can
        hear that it closed), or when the phase's time runs out."""
        try:
            await asyncio.wait_for(
                self.stop.wait(), timeout=max(0.0, self.cfg.duration - self.elapsed())
            )
        except TimeoutError:
            self.stop.set()
        if self.sold_out_at is not None:
            await asyncio.sleep(
                max(0.0, self.sold_out_at + self.queue.tell_seconds - self.elapsed())
            )
        self._tell_the_line()

    async def worker(self) -> None:
        """The phase's work: every buyer waits in line (the first worker runs them all, so the
        on-sale's phase times and measures it; at most `concurrency` of them book at once)."""
        if self._line is None or self._watching:
            return
        self._watching = True
        watcher = asyncio.ensure_future(self._watch_the_time())
        try:
            await self._line
        finally:
            self._tell_the_line()
            watcher.cancel()

    async def booking_phase(self) -> dict[str, Any]:
        results = await super().booking_phase()
        q = self.qstats
        admitted = sorted(q.admitted_iat)
        sale_s = self.sold_out_at if self.sold_out_at is not None else results["duration_s"]
        sale_end = q.opened_at + float(sale_s)
        during_sale = sum(1 for t in q.poll_times if q.opened_at <= t <= sale_end)
        before_opening = sum(1 for t in q.poll_times if t < q.opened_at)
        sold_out_epoch = q.opened_at + self.sold_out_at if self.sold_out_at is not None else None
        heard = sorted(t - sold_out_epoch for t in q.closed_heard_at) if sold_out_epoch else []
        results["queue"] = {
            "buyers": len(self.buyers),
            "admitted": len(admitted),
            "closed_out": q.closed,
            "still_waiting_at_the_end": len(self.buyers) - len(admitted) - q.closed,
            "time_to_admit_all_s": (admitted[-1] - q.opened_at) if admitted else None,
            "place_reads": q.polls,
            "place_reads_before_opening": before_opening,
            "place_reads_per_s_during_sale": round(during_sale / sale_s, 1) if sale_s else None,
            "place_reads_per_admitted": round(q.polls / len(admitted), 2) if admitted else None,
            "answers_with_a_hint": q.hinted,
            "closed_heard_within_s": {
                "p50": round(heard[len(heard) // 2], 1) if heard else None,
                "max": round(heard[-1], 1) if heard else None,
            },
            "place_read_errors": dict(q.poll_errors),
        }
        return results


async def run_queue_onsale(config: OnsaleConfig, queue: QueueConfig) -> dict[str, Any]:
    """The queued sale, then (unless `queue.baseline` is off) the unloaded reference sale."""
    # Long enough for everyone to be admitted at the configured rate (auto starts at 600 a minute),
    # unless the seats run out first.
    admit_all = 60.0 * queue.buyers / (queue.admit_per_minute or 600)
    config = replace(
        config,
        buyers=queue.buyers,
        attempts=queue.buyers,
        duration=max(config.duration, admit_all + queue.tell_seconds),
    )
    config.validate()
    client = open_client(
        config.http_client,
        config.url,
        pool=max(config.concurrency, config.setup_concurrency) * 2 + 4,
        timeout=config.request_timeout,
    )
    try:
        run = QueuedOnsaleRun(config, client, queue)
        report = await drive(
            run, config, f"set-up ({config.seats} seats, {queue.buyers} buyers in the room)"
        )
    finally:
        await client.aclose()
    report["benchmark"] = "onsale-queue"
    report["queue"] = {
        "admit_per_minute": queue.admit_per_minute or "auto",
        **report["results"]["queue"],
        "server_errors": server_errors(report),
    }
    if queue.baseline:
        q = report["queue"]
        # The rate the room admitted at: configured, or (auto) as it turned out.
        per_second = (queue.admit_per_minute or 0) / 60 or (
            q["admitted"] / max(1.0, q["time_to_admit_all_s"] or 1.0)
        )
        arrivals = sorted(run.arrivals)
        for key, times, how, what in (
            ("baseline", arrivals, "when the admitted buyers did", "the same arrivals"),
            (
                "baseline_even",
                even_arrivals(len(arrivals), per_second),
                f"{per_second:.1f} a second, evenly",
                "the same rate, evenly",
            ),
        ):
            log(f"onsale --queue: the same sale without the room, {what}")
            paced_cfg = replace(
                config,
                buyers=max(1, len(times)),
                attempts=max(1, len(times)),
                label=(config.label or config.url) + f" (no room, {what})",
            )
            client = open_client(
                config.http_client,
                config.url,
                pool=config.concurrency + 4,
                timeout=config.request_timeout,
            )
            try:
                report[key] = await run_paced_onsale(paced_cfg, times, client, how)
            finally:
                await client.aclose()
        log("onsale --queue: the same sale without the room, a closed loop of few buyers")
        base_cfg = replace(
            config,
            buyers=max(1, queue.baseline_concurrency),
            concurrency=queue.baseline_concurrency,
            attempts=config.seats,
            label=(config.label or config.url) + " (no room, closed loop)",
        )
        report["baseline_closed_loop"] = await run_onsale(base_cfg)
    return report
