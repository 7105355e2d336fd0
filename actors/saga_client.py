"""The typed client of the booking saga actors, and the start-up of the fixed actors.

Apart from `actors.clients` because the saga actor itself uses those clients: this module
imports the saga actor, which imports `actors.clients`, never the reverse.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ray.actor import ActorHandle

from actors import factory
from actors.admitter import AdmitterClient
from actors.booking_saga import BookingSaga
from actors.clients import DirectoryClient, NotifierClient, PaymentClient, call_with_retries
from actors.names import saga_actor_name
from actors.warmer import start_warmer
from config.settings import get_settings
from domain.saga import CancelOutcome, SagaOutcome


class BookingSagaClient:
    """The fixed pool of saga actors (`actors.booking_saga.BookingSaga`), one per slot."""

    def __init__(self, pool_size: int | None = None) -> None:
        self._given_pool_size = pool_size

    @property
    def _pool_size(self) -> int:
        # Read when used, not when built: a route module builds its client at import.
        return (
            get_settings().saga_pool_size
            if self._given_pool_size is None
            else self._given_pool_size
        )

    def _handle(self, slot: int) -> ActorHandle[Any]:
        return factory.get_or_create(BookingSaga, saga_actor_name(slot), slot, self._pool_size)

    def slot_of(self, saga_slot: int) -> int:
        """The slot that drives a booking recorded with `saga_slot` (the pool may have shrunk)."""
        return saga_slot if saga_slot < self._pool_size else 0

    def start(self) -> None:
        """Creates every saga actor of the pool, so recovery of unfinished sagas begins at once."""
        for slot in range(self._pool_size):
            self._handle(slot)

    async def start_booking(self, *, slot: int, booking_id: str, request_id: str = "") -> None:
        """Starts (or joins) the saga of a booking and returns at once (bookings are normally
        started by their insert's announcement, with no actor call)."""
        await call_with_retries(
            saga_actor_name(slot),
            lambda: self._handle(slot),
            lambda h: h.start.remote(booking_id, request_id),
        )

    async def run(self, *, slot: int, booking_id: str, request_id: str = "") -> SagaOutcome | None:
        """Drives a booking and waits for its outcome (tests and recovery tools)."""
        outcome: SagaOutcome | None = await call_with_retries(
            saga_actor_name(slot),
            lambda: self._handle(slot),
            lambda h: h.run.remote(booking_id, request_id),
        )
        return outcome

    async def cancel(
        self, *, slot: int, booking_id: str, request_id: str = "", timeout: float | None = None
    ) -> CancelOutcome | None:
        """Drives (or joins) the persisted cancellation of a booking and waits for its outcome;
        None when no cancellation was requested.

        Raises:
            TimeoutError: no outcome within `timeout` seconds; the saga actor finishes the work.
        """
        outcome: CancelOutcome | None = await asyncio.wait_for(
            call_with_retries(
                saga_actor_name(slot),
                lambda: self._handle(slot),
                lambda h: h.cancel.remote(booking_id, request_id),
            ),
            timeout=timeout,
        )
        return outcome

    async def recover_once(self, *, slot: int, stale_after: float | None = None) -> int:
        resumed: int = await call_with_retries(
            saga_actor_name(slot),
            lambda: self._handle(slot),
            lambda h: h.recover_once.remote(stale_after),
        )
        return resumed


def start_service_actors() -> None:
    """Creates the fixed actors at start-up, so recovery of unfinished sagas begins at once (and
    the waiting rooms' admitter begins its rounds)."""
    DirectoryClient().start()
    PaymentClient().start()
    NotifierClient().start()
    BookingSagaClient().start()
    start_warmer()
    AdmitterClient().start()
