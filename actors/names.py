"""The names of TicketFlow's actors and the options they are created with.

This module imports nothing of ours, so every other module (actors, clients, the API, tests,
tools) can name an actor without pulling in the actor classes or Ray.
"""

from __future__ import annotations

from typing import Any

NAMESPACE = "ticketflow"
PAYMENT_ACTOR = "payment-gateway"
DIRECTORY_ACTOR = "seat-actor-directory"
NOTIFIER_ACTOR = "notifier"
WARMER_ACTOR = "seat-actor-warmer"
ADMITTER_ACTOR = "waiting-room-admitter"


def seat_actor_name(event_id: str) -> str:
    """One seat actor per event."""
    return f"seat-inventory:{event_id}"


def saga_actor_name(slot: int) -> str:
    """One saga actor per slot of the fixed pool."""
    return f"booking-saga:{slot}"


def actor_options(
    name: str, *, max_restarts: int = -1, scheduling_strategy: Any = None
) -> dict[str, Any]:
    """The one options block of every named actor: get-or-create in our namespace, detached
    (it outlives its creator) and restartable (`__init__` rebuilds its state from Postgres).

    When the actor already exists, Ray returns it and ignores the constructor arguments.
    """
    options: dict[str, Any] = {
        "name": name,
        "namespace": NAMESPACE,
        "get_if_exists": True,
        "lifetime": "detached",
        "max_restarts": max_restarts,
    }
    if scheduling_strategy is not None:
        options["scheduling_strategy"] = scheduling_strategy
    return options
