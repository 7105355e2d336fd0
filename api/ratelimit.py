"""Rate limits shared by every gateway replica through Redis (fixed one-minute windows).

Fail-open: when Redis is unreachable the request goes through (bookings must keep working on a
Redis outage; the database constraints, not the limiter, keep seats safe), and Redis is not asked
again for `BREAKER_SECONDS`, so a dead Redis costs one timeout, not one per request.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from actors import metrics
from domain.errors import RateLimited

logger = logging.getLogger(__name__)
BREAKER_SECONDS = 5.0


@dataclass(frozen=True)
class Limit:
    scope: str  # "ip", "user", "auth", "login"
    requests: int
    window_seconds: int = 60


class TooManyRequests(RateLimited):
    """RateLimited with the seconds until the window resets (never crosses an actor boundary)."""

    retry_after: int = 1

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class RateLimiter:
    def __init__(self, redis_url: str | None, *, enabled: bool, timeout: float = 0.25) -> None:
        self._enabled = enabled and bool(redis_url)
        self._redis = (
            aioredis.from_url(redis_url, socket_timeout=timeout, socket_connect_timeout=timeout)
            if self._enabled and redis_url
            else None
        )
        self._skip_until = 0.0

    async def hit(self, limit: Limit, key: str) -> None:
        """Counts one request for `key`; raises TooManyRequests once the window's budget is spent."""
        if self._redis is None or time.monotonic() < self._skip_until:
            return
        now = time.time()
        window = int(now // limit.window_seconds)
        redis_key = f"tf:rl:{limit.scope}:{key}:{window}"
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.incr(redis_key)
                pipe.expire(redis_key, limit.window_seconds + 1)
                count, _ = await pipe.execute()
        except (RedisError, OSError, TimeoutError) as exc:
            self._skip_until = time.monotonic() + BREAKER_SECONDS
            logger.warning(
                "rate limiter: Redis unavailable (%s); failing open for %.0f s",
                type(exc).__name__,
                BREAKER_SECONDS,
            )
            return
        if int(count) > limit.requests:
            err = TooManyRequests(
                f"Too many requests; limit is {limit.requests} per {limit.window_seconds} s"
            )
            err.retry_after = max(1, int((window + 1) * limit.window_seconds - now) + 1)
            metrics.record_rate_limited(limit.scope)
            raise err

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()  # type: ignore[attr-defined]
