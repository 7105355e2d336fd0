"""Creates and finds named actors: the one get-or-create, and a per-process cache of handles.

It takes the actor class as an argument and imports no actor module, so the actor modules and
the clients that use it form no import cycle. Handles are cached per process; a handle whose
actor exited (an idle seat actor retires itself) is dropped with `forget` and the actor is
created again on the next call.
"""

from __future__ import annotations

from typing import Any

import ray
from ray.actor import ActorHandle

from actors.names import NAMESPACE, actor_options

_handles: dict[str, ActorHandle[Any]] = {}


def get_or_create(
    actor_class: Any, name: str, *args: Any, max_restarts: int = -1, scheduling_strategy: Any = None
) -> ActorHandle[Any]:
    """The named actor, created with `args` when none is running (a cached handle when known)."""
    handle = _handles.get(name)
    if handle is None:
        options = actor_options(
            name, max_restarts=max_restarts, scheduling_strategy=scheduling_strategy
        )
        handle = actor_class.options(**options).remote(*args)
        _handles[name] = handle
    return handle


def existing(name: str) -> ActorHandle[Any] | None:
    """The named actor if it is running, without starting it."""
    handle = _handles.get(name)
    if handle is not None:
        return handle
    try:
        handle = ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        return None
    _handles[name] = handle
    return handle


def forget(name: str) -> None:
    """Drops a cached handle (its actor died or retired); the next call looks it up again."""
    _handles.pop(name, None)


def kill(name: str) -> None:
    """Stops a named actor for good (no restart) and forgets its handle; no-op when none runs."""
    forget(name)
    try:
        ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=True)
    except ValueError:
        pass
