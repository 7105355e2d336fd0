"""Get-or-create for every named TicketFlow actor, and the one place that knows their names.

All actors live in the `ticketflow` namespace, detached (they outlive the process that created
them) and restartable. Handles are cached per process; a handle whose actor exited (an idle seat
actor retires itself) is dropped and the actor is created again on the next call.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

import ray
from ray.actor import ActorHandle
from ray.exceptions import ActorDiedError, ActorUnavailableError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from actors.directory import Placement
from config.settings import get_settings

logger = logging.getLogger(__name__)

NAMESPACE = "ticketflow"
PAYMENT_ACTOR = "payment-gateway"
DIRECTORY_ACTOR = "seat-actor-directory"
NOTIFIER_ACTOR = "notifier"
T = TypeVar("T")

_handles: dict[str, ActorHandle[Any]] = {}


def seat_actor_name(event_id: str) -> str:
    return f"seat-inventory:{event_id}"


def saga_actor_name(slot: int) -> str:
    return f"booking-saga:{slot}"


def _get_or_create(name: str, factory: Callable[[], ActorHandle[Any]]) -> ActorHandle[Any]:
    handle = _handles.get(name)
    if handle is None:
        handle = factory()
        _handles[name] = handle
    return handle


def forget(name: str) -> None:
    _handles.pop(name, None)


def directory() -> ActorHandle[Any]:
    from actors.directory import SeatActorDirectory

    return _get_or_create(DIRECTORY_ACTOR, lambda: SeatActorDirectory.options(  # type: ignore[attr-defined]
        name=DIRECTORY_ACTOR, namespace=NAMESPACE, get_if_exists=True, lifetime="detached", max_restarts=-1,
    ).remote())


def _existing(name: str) -> ActorHandle[Any] | None:
    try:
        handle = ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        return None
    _handles[name] = handle
    return handle


def _create_seat_inventory(event_id: str, placement: Placement) -> ActorHandle[Any]:
    from actors.seat_inventory import SeatInventory

    for retired in placement.retire:
        logger.info("retiring idle seat actor of %s to stay within the per-node cap", retired)
        retire_seat_inventory(retired)
    name = seat_actor_name(event_id)
    # soft=True: a preference, so the actor still restarts elsewhere when its node is lost.
    strategy: Any = (
        NodeAffinitySchedulingStrategy(placement.node_id, soft=True) if placement.node_id else "SPREAD"
    )
    handle = SeatInventory.options(  # type: ignore[attr-defined]
        name=name, namespace=NAMESPACE, get_if_exists=True, lifetime="detached",
        max_restarts=get_settings().seat_actor_max_restarts, scheduling_strategy=strategy,
    ).remote(event_id)
    _handles[name] = handle
    return handle  # type: ignore[no-any-return]


async def seat_inventory_async(event_id: str) -> ActorHandle[Any]:
    """The event's seat actor, created (within the per-node cap) when none is running."""
    name = seat_actor_name(event_id)
    handle = _handles.get(name) or _existing(name)
    if handle is not None:
        return handle
    placement: Placement = await directory().place.remote(event_id)
    return _create_seat_inventory(event_id, placement)


def seat_inventory(event_id: str) -> ActorHandle[Any]:
    """The same, for synchronous callers (tools and tests; never inside an actor or a handler)."""
    name = seat_actor_name(event_id)
    handle = _handles.get(name) or _existing(name)
    if handle is not None:
        return handle
    placement = cast(Placement, ray.get(directory().place.remote(event_id)))
    return _create_seat_inventory(event_id, placement)


def find_seat_inventory(event_id: str) -> ActorHandle[Any] | None:
    """The live seat actor of an event, without starting one."""
    name = seat_actor_name(event_id)
    return _handles.get(name) or _existing(name)


def retire_seat_inventory(event_id: str) -> None:
    """Stops an event's seat actor (its state is in Postgres); the next use starts a fresh one."""
    name = seat_actor_name(event_id)
    forget(name)
    try:
        ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=True)
    except ValueError:
        pass
    directory().forget.remote(event_id)


def booking_saga(slot: int) -> ActorHandle[Any]:
    from actors.booking_saga import BookingSaga

    name = saga_actor_name(slot)
    pool_size = get_settings().saga_pool_size
    return _get_or_create(name, lambda: BookingSaga.options(  # type: ignore[attr-defined]
        name=name, namespace=NAMESPACE, get_if_exists=True, lifetime="detached", max_restarts=-1,
    ).remote(slot, pool_size))


def payment_gateway() -> ActorHandle[Any]:
    from actors.payment import PaymentGateway

    return _get_or_create(PAYMENT_ACTOR, lambda: PaymentGateway.options(  # type: ignore[attr-defined]
        name=PAYMENT_ACTOR, namespace=NAMESPACE, get_if_exists=True, lifetime="detached", max_restarts=-1,
    ).remote())


def notifier() -> ActorHandle[Any]:
    from actors.notifier import Notifier

    return _get_or_create(NOTIFIER_ACTOR, lambda: Notifier.options(  # type: ignore[attr-defined]
        name=NOTIFIER_ACTOR, namespace=NAMESPACE, get_if_exists=True, lifetime="detached", max_restarts=-1,
    ).remote())


def start_service_actors() -> None:
    """Creates the fixed actors at start-up, so recovery of unfinished sagas begins at once."""
    directory()
    payment_gateway()
    notifier()
    for slot in range(get_settings().saga_pool_size):
        booking_saga(slot)


async def call_seat_actor(event_id: str, call: Callable[[ActorHandle[Any]], Awaitable[T]], *, attempts: int = 3) -> T:
    """Calls an event's seat actor, re-creating it when it has exited (idle retirement).

    Every seat actor method is idempotent for its booking, so a call that may or may not have
    run before the actor died can be repeated safely.
    """
    for attempt in range(attempts):
        handle = await seat_inventory_async(event_id)
        try:
            return await call(handle)
        except (ActorDiedError, ActorUnavailableError) as exc:
            forget(seat_actor_name(event_id))
            if attempt == attempts - 1:
                raise
            logger.info("seat actor for %s unavailable (%s); retrying", event_id, type(exc).__name__)
            await asyncio.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


async def call_actor(name: str, get: Callable[[], ActorHandle[Any]], call: Callable[[ActorHandle[Any]], Awaitable[T]], *, attempts: int = 3) -> T:
    """Calls a restartable service actor, waiting out a restart with bounded backoff."""
    for attempt in range(attempts):
        try:
            return await call(get())
        except ActorUnavailableError:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.5 * (attempt + 1))
        except ActorDiedError:
            forget(name)
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")
