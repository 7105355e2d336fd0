"""Notifier: delivers the notifications that bookings recorded, by SMTP or to the outbox."""

from __future__ import annotations

import asyncio
import logging

import ray

from actors import metrics
from actors.rounds import paced_rounds
from config.settings import get_settings
from domain.notifications import compose, retry_delay
from providers.email import (
    EmailDeliveryFailed,
    EmailRejected,
    EmailSender,
    check_smtp,
    sender_from_settings,
)
from storage import notification_repository
from storage.notification_repository import DueNotification
from storage.pool import LazyPool
from supervision.priority import lower_niceness

logger = logging.getLogger(__name__)
BATCH = 200
# Delivery rounds start at least this far apart. A round costs a few ms whatever it carries (the
# poke that woke it, two statements, a trip to the outbox's thread or an SMTP session): waking on
# every poke gave ~10 rounds a second of ~12 emails each during an on-sale. Emails wait at most
# this much longer.
MIN_ROUND_INTERVAL = 0.5


@ray.remote(max_restarts=-1, max_task_retries=0, max_concurrency=100)  # type: ignore[call-overload]
class Notifier:
    """Sends every PENDING notification row, retrying failed deliveries with backoff.

    State: none that matters; the `notifications` table is the outbox. Rows are written in the
    same transaction as the booking status they announce, so a notification is never lost; this
    actor only moves them from PENDING to SENT (or FAILED after `notify_max_attempts`).

    Concurrency: one delivery loop, woken by `poke()` or every `notify_poll_seconds`, its rounds
    at least `MIN_ROUND_INTERVAL` apart (`actors.rounds.paced_rounds`); a single loop means a row
    is never sent by two deliveries at once. A crash between the send and the
    SENT update can repeat an email (at-least-once); the Message-ID stays the same.
    Restarts: `max_restarts=-1`; the loop starts again in `__init__`.
    """

    def __init__(self) -> None:
        self._settings = get_settings()
        lower_niceness(self._settings.notify_nice)
        self._sender: EmailSender = sender_from_settings(
            smtp_url=self._settings.smtp_url,
            smtp_from=self._settings.smtp_from,
            timeout=self._settings.smtp_timeout_seconds,
            outbox_dir=self._settings.resolved_outbox_dir,
        )
        self._pool = LazyPool(self._settings, min_size=1, max_size=2)
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop().create_task(self._deliver_forever())

    async def poke(self) -> None:
        self._wake.set()

    async def smtp_status(self) -> str:
        return str(await check_smtp(self._settings.smtp_url))

    async def _deliver_forever(self) -> None:
        await paced_rounds(
            self._deliver_all_due,
            self._wake,
            poll_seconds=self._settings.notify_poll_seconds,
            min_interval=MIN_ROUND_INTERVAL,
            label="notifier: delivery round",
        )

    async def _deliver_all_due(self) -> None:
        while await self.deliver_due() == BATCH:
            pass

    async def deliver_due(self) -> int:
        pool = await self._pool.get()
        async with pool.acquire() as conn:
            due = await notification_repository.list_due(conn, limit=BATCH)
        if not due:
            return 0
        # The whole round in one hand-over: one SMTP session, or one trip to the outbox's thread.
        failures = await self._sender.send_many([(compose(n.type, n.summary), n.id) for n in due])
        sent = []
        for notification, failure in zip(due, failures, strict=True):
            if failure is None:
                sent.append(notification.id)
            else:
                await self._record_failure(notification, failure)
        if sent:
            metrics.record_email("sent" if self._settings.smtp_url else "outbox", len(sent))
            # One statement for the whole batch: a crash before it repeats these emails (at least
            # once, same Message-ID), it never loses one.
            async with pool.acquire() as conn:
                await notification_repository.mark_sent(conn, sent)
            if logger.isEnabledFor(logging.INFO):
                sent_ids = set(sent)
                for notification in due:
                    if notification.id in sent_ids:
                        logger.info("notification sent", extra=_fields(notification))
        return len(due)

    async def _record_failure(
        self, notification: DueNotification, exc: EmailDeliveryFailed
    ) -> None:
        """Schedules the retry of a notification that was not delivered, or gives it up."""
        pool = await self._pool.get()
        attempts = notification.attempts + 1
        async with pool.acquire() as conn:
            if isinstance(exc, EmailRejected) or attempts >= self._settings.notify_max_attempts:
                await notification_repository.give_up(
                    conn, notification_id=notification.id, error=str(exc)
                )
                metrics.record_email("gave_up")
                logger.error(
                    "notification %s (booking_id=%s) given up: %s",
                    notification.id,
                    notification.booking_id,
                    exc,
                    extra=_fields(notification),
                )
            else:
                delay = retry_delay(
                    attempts - 1,
                    self._settings.notify_retry_base_seconds,
                    self._settings.notify_retry_max_seconds,
                )
                await notification_repository.schedule_retry(
                    conn, notification_id=notification.id, error=str(exc), delay_seconds=delay
                )
                metrics.record_email("retry")
                logger.warning(
                    "notification %s (booking_id=%s) retry in %.1f s",
                    notification.id,
                    notification.booking_id,
                    delay,
                    extra=_fields(notification),
                )


def _fields(notification: DueNotification) -> dict[str, str]:
    """The structured fields of a delivery's log line: it joins the booking's other lines."""
    return {
        "request_id": notification.request_id,
        "booking_id": notification.booking_id,
        "notification_id": notification.id,
        "notification_type": notification.type.value,
    }
