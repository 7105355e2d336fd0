"""An event's waiting room in Redis: who waits, in which order, and who was admitted when.

Why ~560 lines in one module: about half is the Lua scripts, each beside the method that runs it;
they share one key layout that must not drift apart.

Every gateway replica shares it: a position read is one script call (EVALSHA), no actor, and
nothing lives in the process, so a replica restart loses nobody's place (docs/waiting-room.md).

Keys, per event (`{event}` is a Redis Cluster hash tag: one event's keys share a slot, so its
scripts may touch them all):

    <prefix>:{<event>}:meta      hash   state (waiting|open|closed), opened_at, closed_at, seq,
                                        opens_at (salesStartAt, for the hints), rate
    <prefix>:{<event>}:users     hash   user id -> ticket          (one place per user)
    <prefix>:{<event>}:tickets   hash   ticket -> user id
    <prefix>:{<event>}:joined    hash   ticket -> joined at (unix seconds)
    <prefix>:{<event>}:queue     zset   ticket, by order: lottery draw (joined before the
                                        opening) or LATE_BASE + arrival number (after it)
    <prefix>:{<event>}:admitted  zset   ticket, by admission time (unix seconds)

The lottery: a ticket that joins before the opening gets a score drawn from the OS's CSPRNG
(`secrets.randbits`) at join, so the queue's order among them is a uniform random permutation
the moment the room opens, with no work at the opening (no shuffle of 100 000 entries inside
Redis, whose Lua `math.random` is no CSPRNG either). Scores before the opening are never shown:
a place read says WAITING until then. Later arrivals score LATE_BASE + n, above every draw: FIFO.
Every write refreshes a TTL on the event's keys (the style's rule: no Redis key without one).
"""

from __future__ import annotations

import enum
import re
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from domain.admission import PACING_WINDOW_SECONDS, AdmissionPacer

if TYPE_CHECKING:
    from redis.asyncio import Redis

DEFAULT_PREFIX = "tf:wr"
DEFAULT_KEY_TTL_SECONDS = 7 * 24 * 3600
DEFAULT_ADMISSION_WINDOW_SECONDS = 600
# Lottery draws are in [0, 2**52); late arrivals score 2**52 + n. Both are integers a double
# holds exactly (Redis keeps scores as doubles), so no two orders can collide by rounding.
LOTTERY_BITS = 52
LATE_BASE = 2**LOTTERY_BITS
KEY_KINDS = ("meta", "users", "tickets", "joined", "queue", "admitted")
# Event ids go into key names; nothing that could break out of the hash tag or the namespace.
_EVENT_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_TICKET = re.compile(r"^([A-Za-z0-9_-]{1,64})\.([A-Za-z0-9_-]{16})$")
ADMIT_CONFLICT_RETRIES = 5

# KEYS: meta users tickets joined queue admitted;
# ARGV: user, new ticket, draw, now, ttl, late base, opening time ('' if none given),
#       fixed rate ('' for auto)
_JOIN = """
local existing = redis.call('HGET', KEYS[2], ARGV[1])
if existing then
  return {existing, 'existing', redis.call('HGET', KEYS[4], existing) or ''}
end
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'closed' then
  return {'', 'closed', ''}
end
if ARGV[7] ~= '' then redis.call('HSET', KEYS[1], 'opens_at', ARGV[7]) end
if ARGV[8] ~= '' then redis.call('HSET', KEYS[1], 'rate', ARGV[8]) end
if state ~= 'open' and ARGV[7] ~= '' and tonumber(ARGV[4]) >= tonumber(ARGV[7]) then
  redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at', ARGV[7])
  state = 'open'
end
local score
if state == 'open' then
  score = string.format('%.0f', tonumber(ARGV[6]) + redis.call('HINCRBY', KEYS[1], 'seq', 1))
else
  redis.call('HSET', KEYS[1], 'state', 'waiting')
  score = ARGV[3]
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[4], ARGV[2], ARGV[4])
redis.call('ZADD', KEYS[5], score, ARGV[2])
for i = 1, #KEYS do redis.call('EXPIRE', KEYS[i], ARGV[5]) end
return {ARGV[2], 'new', ARGV[4]}
"""

# KEYS: meta tickets joined queue admitted; ARGV: ticket
_PLACE = """
local user = redis.call('HGET', KEYS[2], ARGV[1])
if not user then return {} end
return {
  user,
  redis.call('HGET', KEYS[1], 'state') or 'waiting',
  redis.call('ZSCORE', KEYS[5], ARGV[1]) or '',
  redis.call('ZRANK', KEYS[4], ARGV[1]) or -1,
  redis.call('ZCARD', KEYS[4]),
  redis.call('HGET', KEYS[3], ARGV[1]) or '',
  redis.call('HGET', KEYS[1], 'rate') or '',
  redis.call('HGET', KEYS[1], 'opens_at') or '',
}
"""

# KEYS: meta; ARGV: opening time ('' for none: on sale now), fixed rate ('' for auto), ttl
_SET_OPENING = """
if ARGV[1] == '' then
  redis.call('HDEL', KEYS[1], 'opens_at')
else
  redis.call('HSET', KEYS[1], 'opens_at', ARGV[1])
end
if ARGV[2] ~= '' then
  redis.call('HSET', KEYS[1], 'rate', ARGV[2])
elseif redis.call('HGET', KEYS[1], 'state') ~= 'open' then
  redis.call('HDEL', KEYS[1], 'rate')  -- auto: the start rate until the admitter's first round
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""

# KEYS: all six; ARGV: now, ttl
_OPEN = """
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'open' or state == 'closed' then
  return {state, redis.call('HGET', KEYS[1], 'opened_at') or ''}
end
redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at', ARGV[1])
for i = 1, #KEYS do redis.call('EXPIRE', KEYS[i], ARGV[2]) end
return {'opened', ARGV[1]}
"""

# KEYS: all six; ARGV: now, ttl
_CLOSE = """
if redis.call('HGET', KEYS[1], 'state') == 'closed' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'closed', 'closed_at', ARGV[1])
for i = 1, #KEYS do redis.call('EXPIRE', KEYS[i], ARGV[2]) end
return 1
"""

# KEYS: all six; ARGV: n, now, admitted count expected (-1: any), ttl
_ADMIT = """
if redis.call('HGET', KEYS[1], 'state') ~= 'open' then return {'not-open'} end
local expected = tonumber(ARGV[3])
if expected >= 0 and redis.call('ZCARD', KEYS[6]) ~= expected then return {'conflict'} end
local popped = redis.call('ZPOPMIN', KEYS[5], ARGV[1])
local out = {'ok'}
for i = 1, #popped, 2 do
  local ticket = popped[i]
  redis.call('ZADD', KEYS[6], ARGV[2], ticket)
  out[#out + 1] = ticket
  out[#out + 1] = redis.call('HGET', KEYS[3], ticket)
  out[#out + 1] = redis.call('HGET', KEYS[4], ticket) or ''
end
for i = 1, #KEYS do redis.call('EXPIRE', KEYS[i], ARGV[4]) end
return out
"""

# KEYS: meta queue admitted; ARGV: start of the pacing window, start of the admission window
_PACING = """
return {
  redis.call('HGET', KEYS[1], 'state') or 'waiting',
  redis.call('HGET', KEYS[1], 'opened_at') or '',
  redis.call('ZCARD', KEYS[3]),
  redis.call('ZCOUNT', KEYS[3], '(' .. ARGV[1], '+inf'),
  redis.call('ZCOUNT', KEYS[3], '(' .. ARGV[2], '+inf'),
  redis.call('ZCARD', KEYS[2]),
}
"""


class QueueState(enum.StrEnum):
    WAITING = "waiting"  # joins are accepted; the lottery decides the order at the opening
    OPEN = "open"  # admitting; later arrivals queue at the back
    CLOSED = "closed"  # sold out: nobody else gets in


class PlaceStatus(enum.StrEnum):
    WAITING = "WAITING"  # before the opening: in the lottery, no position yet
    QUEUED = "QUEUED"  # in line; position and people ahead are known
    ADMITTED = "ADMITTED"  # may book (with the admission token) until the window ends
    CLOSED = "CLOSED"  # the queue closed (sold out) before this ticket was admitted


@dataclass(frozen=True)
class QueueTicket:
    """A user's place in an event's waiting room, as join returns it."""

    ticket: str
    event_id: str
    user_id: str
    joined_at: float
    new: bool  # False: the user had joined before; this is the same ticket


@dataclass(frozen=True)
class Place:
    """Where a ticket stands. `position` is 1-based; both it and `ahead` are None unless QUEUED.

    `rank` (people before it in the queue's order, the draw's before the opening) and `opens_at`
    are for the server's own use (when to look next): the draw is not shown as a position.
    """

    ticket: str
    event_id: str
    user_id: str
    status: PlaceStatus
    queue_state: QueueState
    position: int | None
    ahead: int | None
    waiting: int  # how many are in line (not yet admitted)
    joined_at: float | None
    admitted_at: float | None
    admit_per_minute: int | None = None  # the rate the admitter last used (None: not yet known)
    rank: int | None = None  # 0-based, while in the queue (WAITING or QUEUED)
    opens_at: float | None = None  # the room's opening as the joins and updates last said


@dataclass(frozen=True)
class Admitted:
    ticket: str
    user_id: str
    admitted_at: float
    joined_at: float | None


@dataclass(frozen=True)
class PacingState:
    """What the pacer needs, read in one call."""

    state: QueueState
    opened_at: float | None
    admitted: int
    admitted_last_minute: int
    holding: int  # admitted within the admission window: they may still buy
    waiting: int


class QueueClosed(Exception):
    """Joining a waiting room that closed (sold out). The route turns it into its answer."""


class AdmitConflict(Exception):
    """Another admitter admitted between the read and the admission (retry with fresh counts)."""


def event_of_ticket(ticket: str) -> str | None:
    """The event a ticket belongs to, or None for anything that is not one of our tickets."""
    match = _TICKET.match(ticket)
    return match.group(1) if match else None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _seconds(value: Any) -> float | None:
    text = _text(value)
    return float(text) if text else None


def connect(url: str, *, timeout: float) -> Redis[Any]:
    """A Redis client for the waiting room that survives a Redis restart: a pooled connection the
    restart closed is retried on a fresh one (redis-py's `from_url` alone answers the first call
    after a restart with ConnectionError). Every script here may run twice: a join returns the same
    ticket, a place read reads, the admitter's admission checks the count it paced with."""
    from redis.asyncio import Redis as AsyncRedis
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    return AsyncRedis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 3),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )


class WaitingRoom:
    """Waiting rooms of all events, in one Redis (any replica may hold one; they share nothing).

    Args:
        redis: a `redis.asyncio.Redis` (bytes or decoded responses; both work).
        prefix: the key namespace; tests give each run its own.
        key_ttl_seconds: how long an event's keys outlive their last write.
        admission_window_seconds: how long an admitted buyer may still buy (the token's window);
            they count against the seats left until it ends.
    """

    def __init__(
        self,
        redis: Redis[Any],
        *,
        prefix: str = DEFAULT_PREFIX,
        key_ttl_seconds: int = DEFAULT_KEY_TTL_SECONDS,
        admission_window_seconds: int = DEFAULT_ADMISSION_WINDOW_SECONDS,
    ) -> None:
        if "{" in prefix or "}" in prefix:
            raise ValueError("the key prefix must not contain a hash tag")
        self._redis = redis
        self._prefix = prefix
        self._ttl = key_ttl_seconds
        self._window = admission_window_seconds
        self._join = redis.register_script(_JOIN)
        self._place = redis.register_script(_PLACE)
        self._open = redis.register_script(_OPEN)
        self._close = redis.register_script(_CLOSE)
        self._admit = redis.register_script(_ADMIT)
        self._pacing = redis.register_script(_PACING)
        self._set_opening = redis.register_script(_SET_OPENING)

    def keys(self, event_id: str) -> dict[str, str]:
        """The event's key names by kind."""
        if not _EVENT_ID.match(event_id):
            raise ValueError(f"not an event id: {event_id!r}")
        return {kind: f"{self._prefix}:{{{event_id}}}:{kind}" for kind in KEY_KINDS}

    def _all_keys(self, event_id: str) -> list[str]:
        keys = self.keys(event_id)
        return [keys[kind] for kind in KEY_KINDS]

    async def join(
        self,
        *,
        event_id: str,
        user_id: str,
        now: float | None = None,
        opens_at: float | None = None,
        per_minute: int | None = None,
    ) -> QueueTicket:
        """Puts the user in line, once: joining again returns the same ticket (and place).

        Args:
            opens_at: the event's `salesStartAt`, when known: a join at or after it opens the room
                first (as `open` would, with that time), so a late opener never lets a latecomer
                into the lottery. Kept for the place reads' hints (`set_opening` moves it).
            per_minute: the room's fixed rate (None: auto), kept for the same hints until the
                admitter records the rate it admits at.

        Raises:
            QueueClosed: the room closed before this user joined.
        """
        if not user_id:
            raise ValueError("joining needs a user id")
        k = self.keys(event_id)
        joined_at = time.time() if now is None else now
        ticket = f"{event_id}.{secrets.token_urlsafe(12)}"
        draw = secrets.randbits(LOTTERY_BITS)
        raw = await self._join(
            keys=[k["meta"], k["users"], k["tickets"], k["joined"], k["queue"], k["admitted"]],
            args=[
                user_id,
                ticket,
                str(draw),
                repr(joined_at),
                self._ttl,
                str(LATE_BASE),
                "" if opens_at is None else repr(opens_at),
                "" if per_minute is None else str(per_minute),
            ],
        )
        got, outcome, joined = (_text(v) for v in raw)
        if outcome == "closed":
            raise QueueClosed(f"the waiting room of {event_id} is closed")
        return QueueTicket(
            ticket=got,
            event_id=event_id,
            user_id=user_id,
            joined_at=float(joined) if joined else joined_at,
            new=outcome == "new",
        )

    async def place(self, ticket: str) -> Place | None:
        """Where `ticket` stands (one Redis call); None for a ticket this room does not know."""
        event_id = event_of_ticket(ticket)
        if event_id is None:
            return None
        k = self.keys(event_id)
        raw = await self._place(
            keys=[k["meta"], k["tickets"], k["joined"], k["queue"], k["admitted"]], args=[ticket]
        )
        if not raw:
            return None
        (
            user,
            state_text,
            admitted_at_text,
            rank_raw,
            waiting_raw,
            joined_text,
            rate_text,
            opens_text,
        ) = raw
        state = QueueState(_text(state_text))
        admitted_at = _seconds(admitted_at_text)
        rank = int(rank_raw)
        if admitted_at is not None:
            status = PlaceStatus.ADMITTED
        elif state is QueueState.CLOSED:
            status = PlaceStatus.CLOSED
        elif state is QueueState.WAITING:
            status = PlaceStatus.WAITING  # the draw is not shown before the opening
        else:
            status = PlaceStatus.QUEUED
        queued = status is PlaceStatus.QUEUED and rank >= 0
        return Place(
            ticket=ticket,
            event_id=event_id,
            user_id=_text(user),
            status=status,
            queue_state=state,
            position=rank + 1 if queued else None,
            ahead=rank if queued else None,
            waiting=int(waiting_raw),
            joined_at=_seconds(joined_text),
            admitted_at=admitted_at,
            admit_per_minute=int(_text(rate_text)) if _text(rate_text) else None,
            rank=rank if rank >= 0 else None,
            opens_at=_seconds(opens_text),
        )

    async def open(self, *, event_id: str, now: float | None = None) -> float | None:
        """Opens the room (idempotent): the lottery order takes effect, later joins queue FIFO.

        Returns:
            When it opened (the first call's time), or None when it is closed.
        """
        at = time.time() if now is None else now
        state, opened_at = (
            _text(v)
            for v in await self._open(keys=self._all_keys(event_id), args=[repr(at), self._ttl])
        )
        return float(opened_at) if opened_at and state != "closed" else None

    async def close(self, *, event_id: str, now: float | None = None) -> bool:
        """Closes the room for good (sold out); True when this call closed it."""
        at = time.time() if now is None else now
        return bool(await self._close(keys=self._all_keys(event_id), args=[repr(at), self._ttl]))

    async def admit_next(
        self,
        *,
        event_id: str,
        n: int,
        now: float | None = None,
        expect_admitted: int | None = None,
    ) -> list[Admitted]:
        """Admits the next `n` in line (at most; fewer when fewer wait), in queue order.

        Args:
            expect_admitted: admit only if exactly this many were admitted before (the count the
                caller paced with); else AdmitConflict. None: admit regardless.

        Returns:
            The admitted, first in line first; empty when the room is not open.
        """
        if n < 0:
            raise ValueError("cannot admit a negative number")
        if n == 0:
            return []
        at = time.time() if now is None else now
        raw = await self._admit(
            keys=self._all_keys(event_id),
            args=[n, repr(at), -1 if expect_admitted is None else expect_admitted, self._ttl],
        )
        outcome = _text(raw[0])
        if outcome == "conflict":
            raise AdmitConflict(event_id)
        rest = raw[1:]
        return [
            Admitted(
                ticket=_text(rest[i]),
                user_id=_text(rest[i + 1]),
                admitted_at=at,
                joined_at=_seconds(rest[i + 2]),
            )
            for i in range(0, len(rest), 3)
        ]

    async def pacing_state(self, *, event_id: str, now: float | None = None) -> PacingState:
        at = time.time() if now is None else now
        k = self.keys(event_id)
        state, opened_at, admitted, last_minute, holding, waiting = await self._pacing(
            keys=[k["meta"], k["queue"], k["admitted"]],
            args=[repr(at - PACING_WINDOW_SECONDS), repr(at - self._window)],
        )
        return PacingState(
            state=QueueState(_text(state)),
            opened_at=_seconds(opened_at),
            admitted=int(admitted),
            admitted_last_minute=int(last_minute),
            holding=int(holding),
            waiting=int(waiting),
        )

    async def admit_paced(
        self,
        *,
        event_id: str,
        pacer: AdmissionPacer,
        seats_left: int,
        max_batch: int,
        now: float | None = None,
    ) -> list[Admitted]:
        """Admits as many as the pacer allows now (at most `max_batch`).

        Safe with several admitters at once: the admission only happens if nobody else admitted
        since the counts were read (checked inside the admitting script); else it re-reads.
        """
        at = time.time() if now is None else now
        for _ in range(ADMIT_CONFLICT_RETRIES):
            st = await self.pacing_state(event_id=event_id, now=at)
            if st.state is not QueueState.OPEN or st.opened_at is None:
                return []
            n = min(
                max_batch,
                pacer.allowance(
                    elapsed_seconds=at - st.opened_at,
                    admitted=st.admitted,
                    admitted_last_minute=st.admitted_last_minute,
                    seats_left=seats_left,
                    holding=st.holding,
                ),
            )
            try:
                return await self.admit_next(
                    event_id=event_id, n=n, now=at, expect_admitted=st.admitted
                )
            except AdmitConflict:
                continue
        return []  # others are admitting right now; the next tick tries again

    async def set_opening(
        self, *, event_id: str, opens_at: float | None, per_minute: int | None
    ) -> None:
        """Records a changed opening (None: on sale now) and fixed rate (None: auto) for the place
        reads' hints. It moves no admission: the admitter opens at `salesStartAt` from Postgres."""
        await self._set_opening(
            keys=[self.keys(event_id)["meta"]],
            args=[
                "" if opens_at is None else repr(opens_at),
                "" if per_minute is None else str(per_minute),
                self._ttl,
            ],
        )

    async def set_rate(self, *, event_id: str, per_minute: int) -> None:
        """Records the rate the admitter admits at now, for the place reads' wait estimates."""
        meta = self.keys(event_id)["meta"]
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hset(meta, "rate", per_minute)
            pipe.expire(meta, self._ttl)
            await pipe.execute()

    async def delete(self, *, event_id: str) -> None:
        """Forgets the event's waiting room (after the sale; tests)."""
        await self._redis.delete(*self._all_keys(event_id))
