"""The usual seat-lock engines, shared by the lock benchmark and the plain booking service.

- Redis: one Lua script takes every seat key with `SET ... PX ttl` only if none exists (all or
  none, atomically: Redis runs a script to completion before anything else); release is a
  compare-and-delete; a sale turns the lock into a long-lived "sold" marker.
- Postgres: the seat rows carry `status`/`holder`/`lock_expires_at`. Either one statement that
  row-locks the wanted seats that are AVAILABLE with `FOR UPDATE SKIP LOCKED` and updates them only
  if it got all of them (never waits, cannot deadlock), or the textbook transaction: a conditional
  `UPDATE ... WHERE status = 'AVAILABLE'` rolled back unless it changed every seat (waits on rows
  another transaction is changing, then re-checks them).
"""

from __future__ import annotations

from typing import Any

import asyncpg
import redis.asyncio as aioredis

SOLD_TTL_MS = 24 * 3600 * 1000  # Redis keys always carry a TTL, even the sold markers

REDIS_LOCK_LUA = """
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then return 0 end
end
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], 'L:' .. ARGV[1], 'PX', ARGV[2])
end
return 1
"""

REDIS_RELEASE_LUA = """
local n = 0
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == 'L:' .. ARGV[1] then
    redis.call('DEL', KEYS[i])
    n = n + 1
  end
end
return n
"""

REDIS_PROMOTE_LUA = """
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) ~= 'L:' .. ARGV[1] then return 0 end
end
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], 'S:' .. ARGV[1], 'PX', ARGV[2])
end
return 1
"""


class RedisSeatLocks:
    """All-or-none seat locks in Redis under `<prefix><event>:<seat>`."""

    def __init__(self, client: aioredis.Redis[bytes], prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self._lock = client.register_script(REDIS_LOCK_LUA)
        self._release = client.register_script(REDIS_RELEASE_LUA)
        self._promote = client.register_script(REDIS_PROMOTE_LUA)

    def key(self, event_id: str, seat_id: str) -> str:
        return f"{self.prefix}{event_id}:{seat_id}"

    def keys(self, event_id: str, seat_ids: list[str] | tuple[str, ...]) -> list[str]:
        return [f"{self.prefix}{event_id}:{s}" for s in seat_ids]

    async def lock(
        self, event_id: str, seat_ids: list[str] | tuple[str, ...], holder: str, ttl_ms: int
    ) -> bool:
        return int(await self._lock(keys=self.keys(event_id, seat_ids), args=[holder, ttl_ms])) == 1

    async def release(
        self, event_id: str, seat_ids: list[str] | tuple[str, ...], holder: str
    ) -> int:
        return int(await self._release(keys=self.keys(event_id, seat_ids), args=[holder]))

    async def apply(
        self, event_id: str, ops: list[tuple[str, str, tuple[str, ...]]], ttl_ms: int
    ) -> list[bool]:
        """Many lock ("L") / release ("R") requests in one round trip (a non-transactional pipeline
        of the same scripts: each script is still atomic on its own)."""
        pipe = self.client.pipeline(transaction=False)
        for kind, holder, seats in ops:
            if kind == "L":
                await self._lock(
                    keys=self.keys(event_id, seats), args=[holder, ttl_ms], client=pipe
                )
            else:
                await self._release(keys=self.keys(event_id, seats), args=[holder], client=pipe)
        results = await pipe.execute()
        return [kind != "L" or int(r) == 1 for (kind, _, _), r in zip(ops, results, strict=True)]

    async def promote(
        self, event_id: str, seat_ids: list[str] | tuple[str, ...], holder: str
    ) -> bool:
        """The sale is written: the lock becomes a sold marker (only if we still hold every seat)."""
        return (
            int(await self._promote(keys=self.keys(event_id, seat_ids), args=[holder, SOLD_TTL_MS]))
            == 1
        )

    async def states(self, event_id: str, seat_ids: list[str]) -> dict[str, str]:
        """seat -> "LOCKED" | "RESERVED" for the seats that have a key."""
        out: dict[str, str] = {}
        for start in range(0, len(seat_ids), 1000):
            chunk = seat_ids[start : start + 1000]
            values = await self.client.mget(self.keys(event_id, chunk))
            for seat, value in zip(chunk, values, strict=True):
                if value is None:
                    continue
                text = value.decode() if isinstance(value, bytes) else str(value)
                out[seat] = "RESERVED" if text.startswith("S:") else "LOCKED"
        return out

    async def delete_all(self) -> int:
        """Removes every key under the prefix (clean-up at the end of a run)."""
        deleted = 0
        batch: list[Any] = []
        async for key in self.client.scan_iter(match=self.prefix + "*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                deleted += int(await self.client.delete(*batch))
                batch = []
        if batch:
            deleted += int(await self.client.delete(*batch))
        return deleted


# -- Postgres -------------------------------------------------------------------------------------
# The seat table both Postgres engines work on (the plain service adds its own columns around it).
CREATE_LOCK_SEATS = """
CREATE TABLE seats (
    event_id        text NOT NULL,
    seat_id         text NOT NULL,
    status          text NOT NULL DEFAULT 'AVAILABLE' CHECK (status IN ('AVAILABLE', 'LOCKED', 'SOLD')),
    holder          text,
    lock_expires_at timestamptz,
    PRIMARY KEY (event_id, seat_id)
)
"""

INSERT_LOCK_SEATS = """
INSERT INTO seats (event_id, seat_id) SELECT $1, 's' || n FROM generate_series(1, $2) AS n
"""

# One statement, all or none: row-lock the wanted seats that are free (skipping rows another
# transaction holds), and update them only when every one of them was got.
LOCK_SEATS_SKIP_LOCKED = """
WITH free AS (
    SELECT seat_id FROM seats
    WHERE event_id = $1 AND seat_id = ANY($2::text[])
      AND (status = 'AVAILABLE' OR (status = 'LOCKED' AND lock_expires_at < now()))
    ORDER BY seat_id
    FOR UPDATE SKIP LOCKED
), taken AS (
    UPDATE seats AS s SET status = 'LOCKED', holder = $3, lock_expires_at = now() + make_interval(secs => $4)
    FROM free
    WHERE s.event_id = $1 AND s.seat_id = free.seat_id AND (SELECT count(*) FROM free) = cardinality($2::text[])
    RETURNING 1
)
SELECT count(*) FROM taken
"""

# The textbook conditional UPDATE; the caller runs it in a transaction and rolls back a partial win.
LOCK_SEATS_CONDITIONAL = """
WITH taken AS (
    UPDATE seats SET status = 'LOCKED', holder = $3, lock_expires_at = now() + make_interval(secs => $4)
    WHERE event_id = $1 AND seat_id = ANY($2::text[])
      AND (status = 'AVAILABLE' OR (status = 'LOCKED' AND lock_expires_at < now()))
    RETURNING 1
)
SELECT count(*) FROM taken
"""

RELEASE_SEATS = """
UPDATE seats SET status = 'AVAILABLE', holder = NULL, lock_expires_at = NULL
WHERE event_id = $1 AND seat_id = ANY($2::text[]) AND holder = $3 AND status = 'LOCKED'
"""


class _PartialLock(Exception):
    """Rolls the conditional-UPDATE transaction back."""


class PostgresSeatLocks:
    """All-or-none seat locks as row state in a `seats` table (see CREATE_LOCK_SEATS)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def lock_skip_locked(
        self, event_id: str, seat_ids: list[str] | tuple[str, ...], holder: str, ttl_s: float
    ) -> bool:
        async with self.pool.acquire() as conn:
            got = await conn.fetchval(
                LOCK_SEATS_SKIP_LOCKED, event_id, list(seat_ids), holder, float(ttl_s)
            )
        return int(got) == len(seat_ids)

    async def lock_conditional(
        self, event_id: str, seat_ids: list[str] | tuple[str, ...], holder: str, ttl_s: float
    ) -> bool:
        async with self.pool.acquire() as conn:
            try:
                async with conn.transaction():
                    got = await conn.fetchval(
                        LOCK_SEATS_CONDITIONAL, event_id, list(seat_ids), holder, float(ttl_s)
                    )
                    if int(got) != len(seat_ids):
                        raise _PartialLock
            except _PartialLock:
                return False
            except asyncpg.DeadlockDetectedError:
                return False
        return True

    async def release(
        self, event_id: str, seat_ids: list[str] | tuple[str, ...], holder: str
    ) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute(RELEASE_SEATS, event_id, list(seat_ids), holder)
