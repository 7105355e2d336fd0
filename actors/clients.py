"""Typed clients of the seat, payment and notifier actors: the only code that calls `.remote`
on them.

Each client owns what every caller used to repeat: getting or creating the actor (through
`actors.factory`), coalescing concurrent small calls into one (`actors.coalescer`), retrying an
actor that is restarting, and timeouts. Callers (saga actors, routes) see plain async methods
with typed arguments and results, so mypy checks every actor call; they can stand in for the
Protocol ports of `domain.saga` and the application layer.

One instance per process: the coalescers batch the calls of everything in the process that
shares the instance. The saga client lives in `actors.saga_client` (it imports this module, and
the saga actor imports this module: one layer each, no cycle).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from ray.actor import ActorHandle
from ray.exceptions import ActorDiedError, ActorUnavailableError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from actors import factory
from actors.coalescer import Coalescer
from actors.directory import DirectoryClient, Placement
from actors.names import NOTIFIER_ACTOR, PAYMENT_ACTOR, seat_actor_name
from actors.notifier import Notifier
from actors.payment import PaymentGateway
from actors.seat_inventory import SeatInventory
from config.settings import get_settings
from domain.best_available import BestLockResult, SeatRequest
from domain.errors import TicketFlowError
from domain.inventory import LockResult, ReserveResult, Summary
from domain.payments import ChargeCard
from domain.saga import Charge

logger = logging.getLogger(__name__)
T = TypeVar("T")
_ALL = ""  # the one key of coalescers that are not per event

__all__ = [
    "DirectoryClient",
    "NotifierClient",
    "PaymentClient",
    "SeatInventoryClient",
    "call_with_retries",
]


async def call_with_retries(
    name: str,
    get: Callable[[], ActorHandle[Any]],
    call: Callable[[ActorHandle[Any]], Awaitable[T]],
    *,
    attempts: int = 3,
    backoff: float = 0.5,
) -> T:
    """Calls a restartable actor, waiting out a restart with bounded backoff.

    `ActorUnavailableError`: the actor is restarting, try the same handle again. `ActorDiedError`:
    the handle is stale (the actor exited or was killed), look it up (or create it) again.
    """
    for attempt in range(attempts):
        try:
            return await call(get())
        except ActorUnavailableError:
            if attempt == attempts - 1:
                raise
        except ActorDiedError:
            factory.forget(name)
            if attempt == attempts - 1:
                raise
        await asyncio.sleep(backoff * (attempt + 1))
    raise AssertionError("unreachable")


class SeatInventoryClient:
    """The seat actors of every event (`actors.seat_inventory.SeatInventory`).

    A seat actor is started on demand, placed by the directory within the per-node cap. Every
    seat actor method is idempotent for its booking, so a call whose actor exited (idle
    retirement) or died is repeated on a fresh one.
    """

    def __init__(self, directory: DirectoryClient | None = None) -> None:
        self._directory = directory or DirectoryClient()
        # Concurrent sagas' locks (and reserves) for one event travel in one seat-actor call.
        self._locks: Coalescer[tuple[str, tuple[str, ...]], LockResult] = Coalescer(self.lock_many)
        self._reserves: Coalescer[str, ReserveResult] = Coalescer(self.reserve_many)
        self._best: Coalescer[tuple[str, SeatRequest], BestLockResult] = Coalescer(
            self.lock_best_many
        )
        self._warming: set[asyncio.Task[None]] = set()

    # -- getting the actor ---------------------------------------------------------------------
    def _create(self, event_id: str, placement: Placement) -> ActorHandle[Any]:
        for retired in placement.retire:
            logger.info("retiring idle seat actor of %s to stay within the per-node cap", retired)
            self.retire_blocking(retired)
        # soft=True: a preference, so the actor still restarts elsewhere when its node is lost.
        strategy: Any = (
            NodeAffinitySchedulingStrategy(placement.node_id, soft=True)
            if placement.node_id
            else "SPREAD"
        )
        return factory.get_or_create(
            SeatInventory,
            seat_actor_name(event_id),
            event_id,
            max_restarts=get_settings().seat_actor_max_restarts,
            scheduling_strategy=strategy,
        )

    async def handle(self, event_id: str) -> ActorHandle[Any]:
        """The event's seat actor, created (within the per-node cap) when none is running."""
        handle = factory.existing(seat_actor_name(event_id))
        if handle is not None:
            return handle
        return self._create(event_id, await self._directory.place(event_id))

    def handle_blocking(self, event_id: str) -> ActorHandle[Any]:
        """The same, for synchronous callers (tools and tests; never inside an actor or a handler)."""
        handle = factory.existing(seat_actor_name(event_id))
        if handle is not None:
            return handle
        return self._create(event_id, self._directory.place_blocking(event_id))

    async def _call(
        self, event_id: str, call: Callable[[ActorHandle[Any]], Awaitable[T]], *, attempts: int = 3
    ) -> T:
        for attempt in range(attempts):
            handle = await self.handle(event_id)
            try:
                return await call(handle)
            except (ActorDiedError, ActorUnavailableError) as exc:
                factory.forget(seat_actor_name(event_id))
                if attempt == attempts - 1:
                    raise
                logger.info(
                    "seat actor for %s unavailable (%s); retrying", event_id, type(exc).__name__
                )
                await asyncio.sleep(0.2 * (attempt + 1))
        raise AssertionError("unreachable")

    async def _live(self, event_id: str) -> ActorHandle[Any] | None:
        # ray.get_actor blocks: off the event loop.
        return await asyncio.to_thread(factory.existing, seat_actor_name(event_id))

    # -- the calls -----------------------------------------------------------------------------
    async def lock(
        self, *, event_id: str, booking_id: str, seat_ids: tuple[str, ...]
    ) -> LockResult:
        """Locks all of a booking's seats or none, coalesced with concurrent locks of the event."""
        return await self._locks.submit(event_id, (booking_id, seat_ids))

    async def lock_many(
        self, event_id: str, requests: list[tuple[str, tuple[str, ...]]]
    ) -> list[LockResult]:
        """Many bookings' locks, (booking id, seat ids) pairs, in one call; answered in order."""
        results: list[LockResult] = await self._call(
            event_id, lambda h: h.lock_many.remote(requests)
        )
        return results

    async def lock_best(
        self, *, event_id: str, booking_id: str, request: SeatRequest
    ) -> BestLockResult:
        """Best available: chooses and locks the best seats for a booking in one actor step (the
        same seats again for the same booking while its lock lives), coalesced with concurrent
        best-available locks of the event."""
        return await self._best.submit(event_id, (booking_id, request))

    async def lock_best_many(
        self, event_id: str, requests: list[tuple[str, SeatRequest]]
    ) -> list[BestLockResult]:
        """Many bookings' best-available locks, (booking id, request) pairs, in one call; in order."""
        results: list[BestLockResult] = await self._call(
            event_id, lambda h: h.lock_best_many.remote(requests)
        )
        return results

    async def lock_with_ttl(
        self, *, event_id: str, booking_id: str, seat_ids: tuple[str, ...], ttl: float | None = None
    ) -> LockResult:
        """One lock with its own TTL (at most the configured one); not coalesced (tools, tests)."""
        result: LockResult = await self._call(
            event_id, lambda h: h.lock.remote(booking_id, seat_ids, ttl)
        )
        return result

    async def reserve(self, *, event_id: str, booking_id: str) -> ReserveResult:
        """Sells a booking's locked seats, coalesced with concurrent reserves of the event."""
        return await self._reserves.submit(event_id, booking_id)

    async def reserve_many(self, event_id: str, booking_ids: list[str]) -> list[ReserveResult]:
        results: list[ReserveResult] = await self._call(
            event_id, lambda h: h.reserve_many.remote(booking_ids)
        )
        return results

    async def release(self, *, event_id: str, booking_id: str) -> tuple[str, ...]:
        released: tuple[str, ...] = await self._call(
            event_id, lambda h: h.release.remote(booking_id)
        )
        return released

    async def unreserve_if_live(self, *, event_id: str, booking_id: str) -> None:
        """Frees a cancelled booking's seats in the live seat actor. One that is not running (or
        has died and restarts) loads the sales from Postgres, where this sale is already released."""
        handle = await self._live(event_id)
        if handle is None:
            return
        try:
            await handle.unreserve.remote(booking_id)
        except ActorDiedError:
            factory.forget(seat_actor_name(event_id))

    async def snapshot(self, event_id: str) -> tuple[dict[str, str], Summary]:
        """Every seat's status and the counts, starting the actor if needed."""
        snapshot: tuple[dict[str, str], Summary] = await self._call(
            event_id, lambda h: h.snapshot.remote()
        )
        return snapshot

    async def snapshot_if_live(self, event_id: str) -> dict[str, str] | None:
        """Every seat's status from the live seat actor; None when none runs (or it is retiring or
        restarting): Postgres answers then."""
        handle = await self._live(event_id)
        if handle is None:
            return None
        try:
            statuses: dict[str, str]
            statuses, _summary = await handle.snapshot.remote()
        except Exception:  # noqa: BLE001 - a retiring or restarting actor: the caller asks Postgres
            factory.forget(seat_actor_name(event_id))
            return None
        return statuses

    async def lock_of(
        self, *, event_id: str, booking_id: str
    ) -> tuple[tuple[str, ...], float] | None:
        """A booking's locked seats and the lock's expiry (epoch seconds), None if it holds none."""
        lock: tuple[tuple[str, ...], float] | None = await self._call(
            event_id, lambda h: h.lock_of.remote(booking_id)
        )
        return lock

    async def warm(self, event_id: str) -> bool:
        """Starts the event's seat actor and loads its seats, before buyers need it.

        Only within the per-node cap: a live actor is simply touched (which keeps it from retiring
        idle), a new one takes a free slot, and when every node is full nothing happens (False):
        warming never retires another event's actor.
        """
        name = seat_actor_name(event_id)
        handle = await self._live(event_id)
        if handle is None:
            placement = await self._directory.place_if_room(event_id)
            if placement is None:
                return False
            handle = self._create(event_id, placement)
        try:
            await handle.warm.remote()
        except (ActorDiedError, ActorUnavailableError):
            factory.forget(name)  # retiring as we called: the next tick or booking starts it
            return False
        return True

    def warm_soon(self, event_id: str) -> None:
        """Warms in the background (fire and forget): a request must not wait for an actor start."""
        task = asyncio.get_running_loop().create_task(self._warm_quietly(event_id))
        self._warming.add(task)
        task.add_done_callback(self._warming.discard)

    async def _warm_quietly(self, event_id: str) -> None:
        try:
            await self.warm(event_id)
        except Exception:  # noqa: BLE001 - warming is an optimisation; the booking path starts it anyway
            logger.warning("warming the seat actor of %s failed", event_id, exc_info=True)

    def retire_blocking(self, event_id: str) -> None:
        """Stops an event's seat actor (its state is in Postgres); the next use starts a fresh one."""
        factory.kill(seat_actor_name(event_id))
        self._directory.forget(event_id)

    async def retire(self, event_id: str) -> None:
        await asyncio.to_thread(self.retire_blocking, event_id)


class PaymentClient:
    """The payment actor (`actors.payment.PaymentGateway`); concurrent charges share one call."""

    def __init__(self) -> None:
        self._charges: Coalescer[ChargeCard, Charge] = Coalescer(self._charge_batch)

    @staticmethod
    def _handle() -> ActorHandle[Any]:
        return factory.get_or_create(PaymentGateway, PAYMENT_ACTOR)

    def start(self) -> None:
        self._handle()

    async def _call(self, call: Callable[[ActorHandle[Any]], Awaitable[T]]) -> T:
        return await call_with_retries(PAYMENT_ACTOR, self._handle, call)

    async def charge(self, order: ChargeCard) -> Charge:
        """Charges one booking, coalesced with concurrent charges; raises the processor's error."""
        return await self._charges.submit(_ALL, order)

    async def _charge_batch(
        self, _key: str, orders: list[ChargeCard]
    ) -> list[Charge | TicketFlowError]:
        return await self.charge_many(orders)

    async def charge_many(self, orders: list[ChargeCard]) -> list[Charge | TicketFlowError]:
        """Many bookings' charges in one call; a charge the processor could not answer comes
        back as its error, alone."""
        results: list[Charge | TicketFlowError] = await self._call(
            lambda h: h.charge_many.remote(orders)
        )
        return results

    async def charge_if_attempted(self, order: ChargeCard) -> Charge | None:
        """The outcome of the charge attempted with this order's key; None when none ever was."""
        charge: Charge | None = await self._call(
            lambda h: h.charge_if_attempted.remote(
                booking_id=order.booking_id,
                user_id=order.user_id,
                amount=order.amount,
                currency=order.currency,
                token=order.payment_token,
                idempotency_key=order.idempotency_key,
            )
        )
        return charge

    async def refund(self, *, payment_id: str, idempotency_key: str) -> None:
        await self._call(
            lambda h: h.refund.remote(payment_id=payment_id, idempotency_key=idempotency_key)
        )

    async def reconcile_once(self) -> int:
        touched: int = await self._call(lambda h: h.reconcile_once.remote())
        return touched


class NotifierClient:
    """The notifier actor (`actors.notifier.Notifier`).

    `poke` wakes it at most every `POKE_INTERVAL`: during an on-sale one actor call per booking
    would cost more than the emails; the notifier's own poll catches anything missed. The notifier
    starts a round at most every 0.5 s (`actors.notifier.MIN_ROUND_INTERVAL`), so pokes more
    frequent than that would be actor calls for nothing.
    """

    POKE_INTERVAL = 0.5

    def __init__(self) -> None:
        self._last_poke = 0.0

    @staticmethod
    def _handle() -> ActorHandle[Any]:
        return factory.get_or_create(Notifier, NOTIFIER_ACTOR)

    def start(self) -> None:
        self._handle()

    async def poke(self) -> None:
        """Fire and forget, throttled."""
        now = time.monotonic()
        if now - self._last_poke >= self.POKE_INTERVAL:
            self._last_poke = now
            self._handle().poke.remote()

    async def reachable(self, *, timeout: float = 2.0) -> bool:
        """Whether the notifier answers a poke within `timeout` (for health checks)."""
        try:
            await asyncio.wait_for(self._handle().poke.remote(), timeout=timeout)
        except Exception:  # noqa: BLE001 - any failure means unreachable to a health check
            factory.forget(NOTIFIER_ACTOR)
            return False
        return True

    async def deliver_due(self) -> int:
        """Runs one delivery round now (tests and tools); how many notifications it handled."""
        handled: int = await call_with_retries(
            NOTIFIER_ACTOR, self._handle, lambda h: h.deliver_due.remote()
        )
        return handled
