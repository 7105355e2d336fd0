"""Best available the usual way in Redis, for plain-redis: one sorted set of free seats per tier
and one for all tiers, scored `rank * 1024 + number`, so that a scan in score order walks the rows
front to back and each row's free seats in order. One Lua script scans it from the front, keeps the
best block by the seat actor's key (`domain/best_available.py`: isolated seats created, row rank,
centre offset, first number), stops once it holds a block that strands nothing and the next row is
further back, and takes the chosen seats out of every set while setting the named-seat path's lock
keys (`benchmarks.baselines.seatlocks`), atomically (Redis runs a script to completion).

A released best-available lock puts its seats back (`release`); a lock that lapses by its TTL does
not (not an oversell, a seat not offered again: the benchmark's 300 s locks never lapse). Rows
never mix tiers in generated layouts, which the scan relies on for adjacency.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from benchmarks.baselines.best_seats import BestSeats
from benchmarks.baselines.seatlocks import SOLD_TTL_MS
from domain.best_available import SeatRequest, unavailable_message
from domain.seating import Seat

# A score's number part: seat numbers stay below it (rows of up to 1023 seats).
ROW_STRIDE = 1024

# KEYS[1]: the free set to choose from (one tier's, or all tiers'); KEYS[2]: row rank -> twice the
# row's centre; KEYS[3..]: every free set of the event (the chosen seats leave them all).
# ARGV: quantity, together (1/0), holder, lock TTL in ms, the lock keys' prefix (+ seat id).
# Returns {1, chosen seat ids}, or {0, largest block, available seats} when nothing fits.
REDIS_CHOOSE_LUA = """
local q = tonumber(ARGV[1])
local together = ARGV[2] == '1'
local stride = STRIDE
local centres = {}
local function centre(rank)
  local c = centres[rank]
  if c == nil then
    c = tonumber(redis.call('HGET', KEYS[2], rank))
    centres[rank] = c
  end
  return c
end
local best = nil      -- {singles, rank, offset, number}
local best_ids = nil
local function better(a, b)
  for i = 1, 4 do
    if a[i] ~= b[i] then return a[i] < b[i] end
  end
  return false
end
local run_ids, run_rank, run_first = {}, -1, 0
local function evaluate()
  local len = #run_ids
  if len < q then return end
  local c2 = centre(run_rank)
  for s = 0, len - q do
    local singles = 0
    if s == 1 then singles = singles + 1 end
    if len - (s + q) == 1 then singles = singles + 1 end
    local number = run_first + s
    local key = {singles, run_rank, math.abs(2 * number + q - 1 - c2), number}
    if best == nil or better(key, best) then
      best = key
      best_ids = {}
      for i = 1, q do best_ids[i] = run_ids[s + i] end
    end
  end
end
-- scattered: the q seats with the smallest (rank, |2n - centre2|, n)
local picked, rank_seats, current = {}, {}, -1
local function flush()
  table.sort(rank_seats, function(a, b)
    if a[1] ~= b[1] then return a[1] < b[1] end
    return a[2] < b[2]
  end)
  for _, s in ipairs(rank_seats) do
    if #picked < q then picked[#picked + 1] = s[3] end
  end
  rank_seats = {}
end
local largest, available, prev_rank, prev_number, run = 0, 0, -1, -1, 0
local done = false
local offset = 0
local batch = 256
while not done do
  local chunk = redis.call('ZRANGE', KEYS[1], offset, offset + batch - 1, 'WITHSCORES')
  if #chunk == 0 then break end
  for i = 1, #chunk, 2 do
    local id, score = chunk[i], tonumber(chunk[i + 1])
    local rank = math.floor(score / stride)
    local number = score - rank * stride
    if redis.call('EXISTS', ARGV[5] .. id) == 1 then
      -- held by a named-seat lock (not through these sets): not free, whatever the set says
    else
      available = available + 1
      if rank == prev_rank and number == prev_number + 1 then run = run + 1 else run = 1 end
      if run > largest then largest = run end
      prev_rank, prev_number = rank, number
      if together then
        if rank == run_rank and number == run_first + #run_ids then
          run_ids[#run_ids + 1] = id
        else
          evaluate()
          if best ~= nil and best[1] == 0 and rank > best[2] then done = true break end
          run_ids, run_rank, run_first = {id}, rank, number
        end
      else
        if rank ~= current then
          flush()
          if #picked >= q then done = true break end
          current = rank
        end
        rank_seats[#rank_seats + 1] = {math.abs(2 * number - centre(rank)), number, id}
      end
    end
  end
  offset = offset + batch
end
local chosen = nil
if together then
  if not done then evaluate() end
  chosen = best_ids
else
  if not done then flush() end
  if #picked >= q then chosen = picked end
end
if chosen == nil then
  return {0, largest, available}
end
for _, id in ipairs(chosen) do
  for k = 3, #KEYS do redis.call('ZREM', KEYS[k], id) end
  redis.call('SET', ARGV[5] .. id, 'L:' .. ARGV[3], 'PX', ARGV[4])
end
return {1, chosen}
""".replace("STRIDE", str(ROW_STRIDE))

# KEYS[1]: seat -> score; KEYS[2]: seat -> tier; KEYS[3]: all tiers' free set; ARGV: holder, the
# lock keys' prefix, the free sets' prefix (+ tier), then the seat ids.
REDIS_RELEASE_BEST_LUA = """
local n = 0
for i = 4, #ARGV do
  local id = ARGV[i]
  if redis.call('GET', ARGV[2] .. id) == 'L:' .. ARGV[1] then
    redis.call('DEL', ARGV[2] .. id)
    local score = redis.call('HGET', KEYS[1], id)
    local tier = redis.call('HGET', KEYS[2], id)
    redis.call('ZADD', KEYS[3], score, id)
    redis.call('ZADD', ARGV[3] .. tier, score, id)
    n = n + 1
  end
end
return n
"""


class RedisBestSeats:
    """Best available over per-tier sorted sets of free seats, under `<prefix><event>:...`; the
    locks it takes are the named-seat path's keys (`lock_prefix` + event + ":" + seat)."""

    def __init__(self, client: aioredis.Redis[bytes], prefix: str, lock_prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self.lock_prefix = lock_prefix
        self._choose = client.register_script(REDIS_CHOOSE_LUA)
        self._release = client.register_script(REDIS_RELEASE_BEST_LUA)
        self._tiers: dict[str, list[str]] = {}  # event -> its tiers (fixed once created)

    def _free(self, event_id: str, tier: str | None) -> str:
        return f"{self.prefix}{event_id}:free:" + (tier or "*")

    def _tiers_of(self, event_id: str) -> str:
        return f"{self.prefix}{event_id}:tiers"

    async def add_event(self, event_id: str, seats: list[Seat]) -> None:
        ranks: dict[str, int] = {}
        bounds: dict[str, tuple[int, int]] = {}
        for seat in seats:
            ranks.setdefault(seat.row, len(ranks))
            lo, hi = bounds.get(seat.row, (seat.number, seat.number))
            bounds[seat.row] = (min(lo, seat.number), max(hi, seat.number))
        score = {s.id: ranks[s.row] * ROW_STRIDE + s.number for s in seats}
        tiers = sorted({s.tier for s in seats})
        self._tiers[event_id] = tiers
        keys = {
            "centres": f"{self.prefix}{event_id}:centres",
            "scores": f"{self.prefix}{event_id}:scores",
            "tier": f"{self.prefix}{event_id}:tier",
        }
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(
            keys["centres"], mapping={str(ranks[r]): lo + hi for r, (lo, hi) in bounds.items()}
        )
        pipe.hset(keys["scores"], mapping=score)
        pipe.hset(keys["tier"], mapping={s.id: s.tier for s in seats})
        pipe.zadd(self._free(event_id, None), score)
        for tier in tiers:
            pipe.zadd(
                self._free(event_id, tier), {s.id: score[s.id] for s in seats if s.tier == tier}
            )
        pipe.sadd(self._tiers_of(event_id), *tiers)
        every = [*keys.values(), self._free(event_id, None), self._tiers_of(event_id)]
        every += [self._free(event_id, t) for t in tiers]
        for key in every:  # Redis keys always carry a TTL
            pipe.pexpire(key, SOLD_TTL_MS)
        await pipe.execute()

    async def choose_and_lock(
        self, event_id: str, request: SeatRequest, holder: str, ttl_ms: int
    ) -> BestSeats:
        tiers = self._tiers.get(event_id)
        if tiers is None:  # an event created before this process started
            found = await self.client.smembers(self._tiers_of(event_id))
            tiers = self._tiers[event_id] = sorted(t.decode() for t in found)
        keys = [
            self._free(event_id, request.tier),
            f"{self.prefix}{event_id}:centres",
            self._free(event_id, None),
            *(self._free(event_id, t) for t in tiers),
        ]
        reply: Any = await self._choose(
            keys=keys,
            args=[
                request.quantity,
                1 if request.together else 0,
                holder,
                ttl_ms,
                f"{self.lock_prefix}{event_id}:",
            ],
        )
        if int(reply[0]) == 1:
            return BestSeats(ok=True, seat_ids=tuple(s.decode() for s in reply[1]))
        largest, available = int(reply[1]), int(reply[2])
        if not request.together:
            largest = min(largest, available)
        return BestSeats(
            ok=False,
            message=unavailable_message(
                tier=request.tier, largest_block=largest, available=available
            ),
        )

    async def release(self, event_id: str, seat_ids: list[str], holder: str) -> int:
        """Compare-and-delete of the locks, and the seats back into their free sets."""
        return int(
            await self._release(
                keys=[
                    f"{self.prefix}{event_id}:scores",
                    f"{self.prefix}{event_id}:tier",
                    self._free(event_id, None),
                ],
                args=[
                    holder,
                    f"{self.lock_prefix}{event_id}:",
                    f"{self.prefix}{event_id}:free:",
                    *seat_ids,
                ],
            )
        )
