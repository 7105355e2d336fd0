"""SeatActorDirectory: which seat actors live on which node, and which may go when one must.

A Ray actor is a whole process (~50 MB), so the number of live seat actors per node is capped
(`TICKETFLOW_SEAT_ACTORS_PER_NODE`). Before a new seat actor is created its client asks the
directory where to put it: on the node with the fewest live seat actors and, when every node is
at the cap, after retiring that node's least recently used seat actor that holds no lock. A
seat actor that holds locks is never retired: a sale in progress matters more than the cap, so
the cap is exceeded (and logged) instead.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, cast

import ray
from ray.actor import ActorHandle

from actors import factory
from actors.names import DIRECTORY_ACTOR
from config.settings import get_settings

logger = logging.getLogger(__name__)


@dataclass
class _Entry:
    node_id: str
    last_used: float
    holds_locks: bool
    heard_at: float = 0.0  # when the actor last reported (or was placed); 0: now, at creation
    # The actor's recent service time (domain.service_time) and when it was measured (0: never).
    service_seconds: float | None = None
    measured_at: float = 0.0

    def __post_init__(self) -> None:
        if not self.heard_at:
            self.heard_at = time.time()


# A live seat actor reports every REPORT_EVERY_SWEEPS sweeps of its lock sweeper; one not heard
# from for SILENT_REPORTS reports (at least SILENT_SECONDS) is gone (killed with its node, or its
# `forget` lost), and its slot is free again.
REPORT_EVERY_SWEEPS = 5
SILENT_REPORTS = 12
SILENT_SECONDS = 60.0
# A service time older than this many reports is no longer "recent": the admitter gets none.
FRESH_REPORTS = 3


@dataclass(frozen=True)
class Placement:
    node_id: str | None  # None: let Ray choose (no node known yet)
    retire: tuple[str, ...]  # event ids whose seat actors must exit first


def choose_placement(
    entries: dict[str, _Entry], nodes: list[str], *, cap: int, now: float, protect: str
) -> Placement:
    """Pure decision: the emptiest node, and the idle actors to retire to stay within the cap."""
    if not nodes:
        return Placement(None, ())
    counts = dict.fromkeys(nodes, 0)
    for entry in entries.values():
        if entry.node_id in counts:
            counts[entry.node_id] += 1
    node = min(nodes, key=lambda n: (counts[n], n))
    if counts[node] < cap:
        return Placement(node, ())
    idle = sorted(
        (e.last_used, event_id)
        for event_id, e in entries.items()
        if e.node_id == node and not e.holds_locks and event_id != protect
    )
    over = counts[node] - cap + 1
    retire = tuple(event_id for _, event_id in idle[:over])
    if len(retire) < over:
        logger.warning(
            "node %s: %d seat actors hold locks; exceeding the cap of %d", node, counts[node], cap
        )
    del now
    return Placement(node, retire)


def free_node(entries: dict[str, _Entry], nodes: list[str], *, cap: int) -> str | None:
    """Pure decision for warming: the emptiest node if it is below the cap, else None (warming
    never retires another event's actor: it only fills free slots)."""
    counts = dict.fromkeys(nodes, 0)
    for entry in entries.values():
        if entry.node_id in counts:
            counts[entry.node_id] += 1
    if not counts:
        return None
    node = min(nodes, key=lambda n: (counts[n], n))
    return node if counts[node] < cap else None


def silent_entries(entries: dict[str, _Entry], *, now: float, silent: float) -> list[str]:
    """Pure decision: the actors not heard from for `silent` seconds (gone, whatever they held)."""
    return [event_id for event_id, e in entries.items() if now - e.heard_at > silent]


def reported(previous: _Entry | None, entry: _Entry, *, service_seconds: float | None) -> _Entry:
    """Pure: the entry after a report. Only the periodic reports measure; the others (a first
    lock, say) keep the last figure and when it was measured."""
    if service_seconds is not None:
        entry.service_seconds, entry.measured_at = service_seconds, entry.heard_at
    elif previous is not None:
        entry.service_seconds, entry.measured_at = previous.service_seconds, previous.measured_at
    return entry


def recent_service_times(
    entries: dict[str, _Entry], event_ids: list[str], *, now: float, fresh: float
) -> dict[str, float]:
    """Pure: the service times of `event_ids`' actors measured within `fresh` seconds."""
    found = {}
    for event_id in event_ids:
        entry = entries.get(event_id)
        if entry is not None and entry.service_seconds is not None:
            if now - entry.measured_at <= fresh:
                found[event_id] = entry.service_seconds
    return found


@ray.remote(max_restarts=-1, max_task_retries=0)
class SeatActorDirectory:
    """Live seat actors by node, as they report themselves.

    State: event id -> (node, last use, holds locks, recent service time), refreshed by every seat
    actor's sweeper (`report`) and dropped when it retires (`forget`). Losing it (a restart) only
    loosens the cap, and leaves the auto admission rates without the seat actors' latency, until
    the next reports arrive, so it is kept in memory alone. A sync actor: calls are
    serialised, so two placements never count the same free slot.
    """

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        settings = get_settings()
        self._cap = settings.seat_actors_per_node
        self._silent = max(
            SILENT_SECONDS, SILENT_REPORTS * REPORT_EVERY_SWEEPS * settings.seat_actor_sweep_seconds
        )
        self._fresh = FRESH_REPORTS * REPORT_EVERY_SWEEPS * settings.seat_actor_sweep_seconds

    def _alive_nodes(self) -> list[str]:
        nodes: list[dict[str, Any]] = ray.nodes()  # type: ignore[no-untyped-call]
        return [
            n["NodeID"]
            for n in nodes
            if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0
        ]

    def place(self, event_id: str) -> Placement:
        now = time.time()
        self._expire(now)
        placement = choose_placement(
            self._entries, self._alive_nodes(), cap=self._cap, now=now, protect=event_id
        )
        for retired in placement.retire:
            self._entries.pop(retired, None)
        if placement.node_id is not None:
            self._entries[event_id] = _Entry(placement.node_id, now, False)
        return placement

    def place_if_room(self, event_id: str) -> Placement | None:
        """A placement on a node below the cap, retiring nobody; None when every node is full."""
        now = time.time()
        self._expire(now)
        # The event's own entry, if any, is an actor that is going or gone: its slot is this one.
        self._entries.pop(event_id, None)
        node = free_node(self._entries, self._alive_nodes(), cap=self._cap)
        if node is None:
            return None
        self._entries[event_id] = _Entry(node, now, False)
        return Placement(node, ())

    def report(
        self,
        event_id: str,
        node_id: str,
        last_used: float,
        holds_locks: bool,
        service_seconds: float | None = None,
    ) -> None:
        """A seat actor's report; `service_seconds` None keeps the figure it reported last."""
        self._entries[event_id] = reported(
            self._entries.get(event_id),
            _Entry(node_id, last_used, holds_locks, heard_at=time.time()),
            service_seconds=service_seconds,
        )

    def service_times(self, event_ids: list[str]) -> dict[str, float]:
        """event id -> its seat actor's recent service time, for those measured lately (the
        admitter's auto rate reads it: domain.admission_rate)."""
        return recent_service_times(self._entries, event_ids, now=time.time(), fresh=self._fresh)

    def forget(self, event_id: str) -> None:
        self._entries.pop(event_id, None)

    def live(self) -> dict[str, str]:
        """event id -> node id (for operators and tests)."""
        self._expire(time.time())
        return {event_id: e.node_id for event_id, e in self._entries.items()}

    def _expire(self, now: float) -> None:
        # An actor that stopped reporting (killed with its node, or a `forget` that never came) no
        # longer counts: live ones report every few seconds, locks or not.
        for event_id in silent_entries(self._entries, now=now, silent=self._silent):
            del self._entries[event_id]


class DirectoryClient:
    """Typed calls to the one `SeatActorDirectory` (created on first use)."""

    @staticmethod
    def _handle() -> ActorHandle[Any]:
        return factory.get_or_create(SeatActorDirectory, DIRECTORY_ACTOR)

    def start(self) -> None:
        """Creates the directory actor now (at start-up) rather than on the first placement."""
        self._handle()

    async def place(self, event_id: str) -> Placement:
        placement: Placement = await self._handle().place.remote(event_id)
        return placement

    async def place_if_room(self, event_id: str) -> Placement | None:
        """A placement within the cap that retires no other actor; None when the cap is reached."""
        placement: Placement | None = await self._handle().place_if_room.remote(event_id)
        return placement

    def place_blocking(self, event_id: str) -> Placement:
        """The same, for synchronous callers (tools and tests; never inside an actor or a handler)."""
        return cast(Placement, ray.get(self._handle().place.remote(event_id)))

    def report(
        self,
        *,
        event_id: str,
        node_id: str,
        last_used: float,
        holds_locks: bool,
        service_seconds: float | None = None,
    ) -> None:
        """Fire and forget: a lost report only loosens the cap until the next one."""
        self._handle().report.remote(event_id, node_id, last_used, holds_locks, service_seconds)

    async def service_times(self, event_ids: list[str]) -> dict[str, float]:
        """event id -> the recent service time its seat actor reported (those measured lately)."""
        found: dict[str, float] = await self._handle().service_times.remote(event_ids)
        return found

    def forget(self, event_id: str) -> None:
        """Fire and forget: the event's seat actor has gone."""
        self._handle().forget.remote(event_id)

    async def live(self) -> dict[str, str]:
        """event id -> node id of the live seat actors (for operators and tests)."""
        live: dict[str, str] = await self._handle().live.remote()
        return live
