"""Per-replica services (pool, token and password services) and the auth dependencies."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Annotated, Any

import asyncpg
import redis.asyncio as aioredis
from fastapi import Depends, Request

from actors.clients import SeatInventoryClient
from api.adapters import Connection, PgDatabase, RaySagas
from api.auth import PasswordService, Principal, TokenService, make_hasher
from api.booking_waiters import BookingWaiters
from api.ratelimit import Limit, RateLimiter
from config.settings import Settings, get_settings
from domain.admission import AdmissionTokens, admission_key
from domain.errors import Forbidden, ServiceUnavailable, Unauthorized
from domain.users import Role
from storage import user_repository
from storage.pool import LazyPool, require_database_url
from storage.waiting_room import WaitingRoom
from storage.waiting_room import connect as connect_waiting_room

# A place read is one small script: a Redis that does not answer in this long is down for us.
WAITING_ROOM_REDIS_TIMEOUT = 2.0


@dataclass
class Services:
    settings: Settings
    tokens: TokenService
    passwords: PasswordService
    limiter: RateLimiter
    started_at: float = field(default_factory=time.monotonic)
    _pool: LazyPool | None = None
    # user id -> (its current role, until when that is trusted): a deleted user's token stops
    # working, and a demoted admin's loses its powers, within auth_user_cache_seconds.
    _known_users: dict[str, tuple[Role, float]] = field(default_factory=dict)
    _waiters: BookingWaiters | None = None
    _room: WaitingRoom | None = None
    _room_redis: aioredis.Redis[Any] | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Services:
        if settings.jwt_secret is None:
            raise RuntimeError("JWT_SECRET is not configured (ticketflow serve generates one)")
        return cls(
            settings=settings,
            tokens=TokenService(
                secret=settings.jwt_secret.get_secret_value(),
                ttl_seconds=settings.jwt_ttl_seconds,
                previous_secret=(
                    settings.jwt_previous_secret.get_secret_value()
                    if settings.jwt_previous_secret is not None
                    else None
                ),
            ),
            passwords=PasswordService(
                make_hasher(
                    memory_kib=settings.password_hash_memory_kib,
                    time_cost=settings.password_hash_time_cost,
                )
            ),
            limiter=RateLimiter(settings.redis_url, enabled=settings.rate_limit_enabled),
        )

    def limit(self, scope: str) -> Limit:
        s = self.settings
        per_minute = {
            "ip": s.rate_limit_ip_per_minute,
            "user": s.rate_limit_user_per_minute,
            "auth": s.rate_limit_auth_per_minute,
            "login": s.rate_limit_login_per_email_per_minute,
        }[scope]
        return Limit(scope, per_minute)

    def connection(self, *, timeout: float | None = None) -> Connection:
        """`async with svc.connection() as conn:` a pooled connection for the block.

        Args:
            timeout: How long to wait for a free connection (None: the pool's default, forever).
        """
        return Connection(self.db, timeout=timeout)

    @cached_property
    def database(self) -> PgDatabase:
        """The use cases' database port (application.ports.Database)."""
        return PgDatabase(self.db)

    @cached_property
    def admission(self) -> AdmissionTokens:
        """The waiting rooms' admission tokens: signed with a key derived from JWT_SECRET (the
        previous secret's key still verifies during a rotation), so every replica checks a token
        by its signature alone, with no shared state and no new secret (docs/waiting-room.md)."""
        s = self.settings
        assert s.jwt_secret is not None  # from_settings refuses to build without it
        previous = s.jwt_previous_secret
        return AdmissionTokens(
            key=admission_key(s.jwt_secret.get_secret_value()),
            window_seconds=s.admission_token_ttl_seconds,
            previous_keys=() if previous is None else (admission_key(previous.get_secret_value()),),
        )

    @cached_property
    def sagas(self) -> RaySagas:
        return RaySagas(self.settings.saga_pool_size)

    @cached_property
    def inventories(self) -> SeatInventoryClient:
        """The seat actors (application.ports.SeatInventories)."""
        return SeatInventoryClient()

    async def db(self) -> asyncpg.Pool:
        if self._pool is None:
            self._pool = LazyPool(self.settings)
        return await self._pool.get()

    def waiting_room(self) -> WaitingRoom:
        """The replica's handle on the events' waiting rooms in Redis (docs/waiting-room.md).

        Raises:
            ServiceUnavailable: no Redis is configured (the queue lives there).
        """
        if self._room is None:
            url = self.settings.redis_url
            if not url:
                raise ServiceUnavailable("The waiting room needs Redis, and none is configured")
            self._room_redis = connect_waiting_room(url, timeout=WAITING_ROOM_REDIS_TIMEOUT)
            # Admitted buyers hold their place against the seats for as long as their token lives.
            self._room = WaitingRoom(
                self._room_redis,
                admission_window_seconds=self.settings.admission_token_ttl_seconds,
            )
        return self._room

    def booking_waiters(self) -> BookingWaiters:
        """The replica's `Prefer: wait` requests; its Postgres listener starts on the first wait."""
        if self._waiters is None:
            self._waiters = BookingWaiters(
                require_database_url(self.settings),
                max_waiters=self.settings.booking_waiters_max,
                connect_timeout=self.settings.db_command_timeout,
            )
        return self._waiters

    async def current_role(self, user_id: str) -> Role | None:
        """The user's role as the database has it now (at most auth_user_cache_seconds old), or
        None when the user no longer exists."""
        now = time.monotonic()
        known = self._known_users.get(user_id)
        if known is not None and known[1] > now:
            return known[0]
        async with self.connection() as conn:
            user = await user_repository.get(conn, user_id)
        if user is None:
            self._known_users.pop(user_id, None)
            return None
        if self.settings.auth_user_cache_seconds > 0:
            if len(self._known_users) > 100_000:
                self._known_users.clear()
            self._known_users[user_id] = (user.role, now + self.settings.auth_user_cache_seconds)
        return user.role

    async def close(self) -> None:
        if self._waiters is not None:
            await self._waiters.close()
        if self._pool is not None:
            await self._pool.close()
        if self._room_redis is not None:
            await self._room_redis.aclose()  # type: ignore[attr-defined]
        await self.limiter.close()


async def services(request: Request) -> Services:
    """The replica's services, built on first use from the process's settings.

    Async although it awaits nothing: FastAPI runs a plain `def` dependency in a worker thread,
    a thread hop on every request."""
    state = request.app.state
    svc: Services | None = getattr(state, "services", None)
    if svc is None:
        svc = Services.from_settings(get_settings())
        state.services = svc
    return svc


ServicesDep = Annotated[Services, Depends(services)]


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def limit_by_ip(request: Request, svc: ServicesDep) -> None:
    await svc.limiter.hit(svc.limit("ip"), client_ip(request))


async def current_principal(request: Request, svc: ServicesDep) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("A bearer token is required")
    principal = svc.tokens.verify(token.strip())
    await svc.limiter.hit(svc.limit("user"), principal.user_id)
    role = await svc.current_role(principal.user_id)
    if role is None:
        raise Unauthorized("The token's user no longer exists")
    # The token's role claim is what the user was at login; rights follow the account as it is now.
    return principal if role is principal.role else replace(principal, role=role)


PrincipalDep = Annotated[Principal, Depends(current_principal)]


async def admin_principal(principal: PrincipalDep) -> Principal:
    if not principal.is_admin:
        raise Forbidden("This route requires the ADMIN role")
    return principal


AdminDep = Annotated[Principal, Depends(admin_principal)]
