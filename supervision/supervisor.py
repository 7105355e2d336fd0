"""What `ticketflow serve` supervises: its embedded Postgres/Redis, restarted when they die.

A server must never run on without its database. The embedded servers run in their own sessions,
so nothing else notices when one dies: ``EmbeddedServices.watch`` (called by the serve loop every
half second) restarts a dead one on its old port, the address every Ray worker was given, and
raises ``ServiceLost`` when it cannot come back, so that the server exits instead.
"""

from __future__ import annotations

import logging
import re
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from supervision.postgres import EmbeddedPostgres, start_embedded_postgres
from supervision.redis import EmbeddedRedis, start_embedded_redis

logger = logging.getLogger(__name__)

RESTART_ATTEMPTS = 2
RESTART_TIMEOUT = 15.0
# A server that keeps dying is not coming back: give up after this many deaths in the window.
MAX_DEATHS = 3
DEATH_WINDOW = 120.0
_Server = TypeVar("_Server", EmbeddedPostgres, EmbeddedRedis)


class ServiceLost(RuntimeError):
    """An embedded service died and could not be restarted."""


def first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# Lines that say what went wrong in the logs servers attach to their errors (HAProxy, Postgres).
_ALERT = re.compile(r"\[ALERT\]|FATAL:|ERROR:|[Ee]rror:")


def failure_reason(exc: BaseException) -> str:
    """One line saying why: the innermost error's first line, and its first alert if it has one.

    A failure inside Ray arrives wrapped (RayTaskError: its first line is the actor's repr), and
    a server's own error often comes after a few lines of notices.
    """
    inner = exc
    while True:
        cause = getattr(inner, "cause", None) or inner.__cause__
        if not isinstance(cause, BaseException) or cause is inner:
            break
        inner = cause
    text = _ANSI.sub("", str(inner)).strip() or type(inner).__name__
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    head = lines[0]
    alert = next((line for line in lines[1:] if _ALERT.search(line)), None)
    return f"{head} ({alert})" if alert else head


class EmbeddedServices:
    """The embedded Postgres and/or Redis of one state directory, owned by this process."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.postgres: EmbeddedPostgres | None = None
        self.redis: EmbeddedRedis | None = None
        self._deaths: dict[str, deque[float]] = {"Postgres": deque(), "Redis": deque()}

    @classmethod
    def start(cls, state_dir: Path, *, postgres: bool, redis: bool) -> EmbeddedServices:
        """Start what is asked; on any failure stop what did start, then raise."""
        services = cls(state_dir)
        try:
            if postgres:
                services.postgres = start_embedded_postgres(state_dir)
            if redis:
                services.redis = start_embedded_redis(state_dir)
        except BaseException:
            services.stop()
            raise
        return services

    def watch(self) -> None:
        """Restart a service that died, at its old port; ``ServiceLost`` when it cannot be."""
        if self.postgres is not None and not self.postgres.alive():
            dead_pg, self.postgres = self.postgres, None
            dead_pg.discard()
            self.postgres = self._restart("Postgres", dead_pg.port, self._start_postgres)
        if self.redis is not None and not self.redis.alive():
            dead_redis, self.redis = self.redis, None
            dead_redis.discard()
            self.redis = self._restart("Redis", dead_redis.port, self._start_redis)

    def _start_postgres(self, port: int) -> EmbeddedPostgres:
        return start_embedded_postgres(self.state_dir, port=port, timeout=RESTART_TIMEOUT)

    def _start_redis(self, port: int) -> EmbeddedRedis:
        return start_embedded_redis(self.state_dir, port=port, timeout=RESTART_TIMEOUT)

    def _restart(self, name: str, port: int, start: Callable[[int], _Server]) -> _Server:
        deaths = self._deaths[name]
        now = time.monotonic()
        deaths.append(now)
        while deaths and now - deaths[0] > DEATH_WINDOW:
            deaths.popleft()
        if len(deaths) > MAX_DEATHS:
            raise ServiceLost(
                f"embedded {name} died {len(deaths)} times in {DEATH_WINDOW:.0f} s; giving up"
            )
        logger.error("embedded %s on port %d died; restarting it on the same port", name, port)
        failure: BaseException | None = None
        for attempt in range(1, RESTART_ATTEMPTS + 1):
            try:
                server = start(port)
            except Exception as exc:  # noqa: BLE001 - any failure to start counts as one attempt
                failure = exc
                logger.error("restarting embedded %s failed (attempt %d): %s", name, attempt, exc)
                time.sleep(1.0)
                continue
            logger.warning("embedded %s restarted on port %d", name, port)
            return server
        assert failure is not None
        raise ServiceLost(
            f"embedded {name} died and could not be restarted on port {port}: {first_line(failure)}"
        )

    def stop(self) -> None:
        """Stop in the reverse order of start. Idempotent."""
        for service in (self.redis, self.postgres):
            if service is not None:
                try:
                    service.stop()
                except Exception:  # noqa: BLE001 - the other one must still be stopped
                    logger.exception("stopping an embedded service failed")
        self.redis = None
        self.postgres = None
