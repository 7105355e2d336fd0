"""Notifier: delivers the notifications that bookings recorded, by SMTP or to the outbox."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import asyncpg
import ray

from actors import metrics
from config.settings import get_settings
from domain.notifications import BookingSummary, NotificationType, compose, retry_delay
from providers.email import (
    EmailDeliveryFailed,
    EmailRejected,
    EmailSender,
    check_smtp,
    sender_from_settings,
)
from storage import queries as q
from storage.pool import LazyPool

logger = logging.getLogger(__name__)
BATCH = 50


def lower_priority(increment: int) -> None:
    """Adds `increment` to the nice value of every thread of this process.

    Linux keeps a nice value per thread and `os.nice` changes only the caller's; Ray runs this
    actor's event loop, its task loop and its C++ I/O threads on different threads. Threads
    started later inherit their creator's value. Lowering priority needs no privilege.
    """
    for task in Path("/proc/self/task").iterdir():
        tid = int(task.name)
        try:
            os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + increment))
        except (ProcessLookupError, PermissionError):
            continue  # the thread ended meanwhile


@ray.remote(max_restarts=-1, max_task_retries=0, max_concurrency=100)  # type: ignore[call-overload]
class Notifier:
    """Sends every PENDING notification row, retrying failed deliveries with backoff.

    State: none that matters; the `notifications` table is the outbox. Rows are written in the
    same transaction as the booking status they announce, so a notification is never lost; this
    actor only moves them from PENDING to SENT (or FAILED after `notify_max_attempts`).

    Concurrency: one delivery loop, woken by `poke()` or every `notify_poll_seconds`; a single
    loop means a row is never sent by two deliveries at once. A crash between the send and the
    SENT update can repeat an email (at-least-once); the Message-ID stays the same.
    Restarts: `max_restarts=-1`; the loop starts again in `__init__`.
    """

    def __init__(self) -> None:
        self._settings = get_settings()
        if self._settings.notify_nice:
            lower_priority(self._settings.notify_nice)
        self._sender: EmailSender = sender_from_settings(
            smtp_url=self._settings.smtp_url, smtp_from=self._settings.smtp_from,
            timeout=self._settings.smtp_timeout_seconds, outbox_dir=self._settings.resolved_outbox_dir,
        )
        self._pool = LazyPool(self._settings, min_size=1, max_size=2)
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop().create_task(self._deliver_forever())

    async def poke(self) -> None:
        self._wake.set()

    async def smtp_status(self) -> str:
        return str(await check_smtp(self._settings.smtp_url))

    async def _deliver_forever(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self._settings.notify_poll_seconds)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                while await self.deliver_due() == BATCH:
                    pass
            except Exception as exc:  # noqa: BLE001 - the database may be down; try again later
                logger.warning("notifier: delivery round failed (%s)", type(exc).__name__)

    async def deliver_due(self) -> int:
        pool = await self._pool.get()
        async with pool.acquire() as conn:
            rows = await conn.fetch(q.SELECT_DUE_NOTIFICATIONS, BATCH)
        if not rows:
            return 0
        # The whole round in one hand-over: one SMTP session, or one trip to the outbox's thread.
        failures = await self._sender.send_many([(compose(NotificationType(r["type"]), _summary(r)), r["id"]) for r in rows])
        sent = []
        for row, failure in zip(rows, failures, strict=True):
            if failure is None:
                sent.append(row["id"])
            else:
                await self._record_failure(row, failure)
        if sent:
            metrics.record_email("sent" if self._settings.smtp_url else "outbox", len(sent))
            # One statement for the whole batch: a crash before it repeats these emails (at least
            # once, same Message-ID), it never loses one.
            async with pool.acquire() as conn:
                await conn.execute(q.UPDATE_NOTIFICATIONS_SENT, sent)
        return len(rows)

    async def _record_failure(self, row: asyncpg.Record, exc: EmailDeliveryFailed) -> None:
        """Schedules the retry of a notification that was not delivered, or gives it up."""
        pool = await self._pool.get()
        attempts = row["attempts"] + 1
        async with pool.acquire() as conn:
            if isinstance(exc, EmailRejected) or attempts >= self._settings.notify_max_attempts:
                await conn.execute(q.UPDATE_NOTIFICATION_GAVE_UP, row["id"], str(exc)[:500])
                metrics.record_email("gave_up")
                logger.error("notification %s (booking_id=%s) given up: %s", row["id"], row["booking_id"], exc)
            else:
                delay = retry_delay(
                    attempts - 1, self._settings.notify_retry_base_seconds, self._settings.notify_retry_max_seconds
                )
                await conn.execute(q.UPDATE_NOTIFICATION_RETRY, row["id"], str(exc)[:500], delay)
                metrics.record_email("retry")
                logger.warning("notification %s (booking_id=%s) retry in %.1f s", row["id"], row["booking_id"], delay)


def _summary(row: asyncpg.Record) -> BookingSummary:
    return BookingSummary(
        booking_id=row["booking_id"], user_name=row["user_name"], user_email=row["recipient"],
        event_name=row["event_name"], event_starts_at=row["event_date"], venue_name=row["venue_name"],
        seat_ids=tuple(row["seat_ids"]), amount=row["total_amount"], currency=row["currency"],
        failure_reason=row["failure_reason"],
    )
