"""Seat-lock engines alone: the seat-actor design vs the usual Redis and Postgres locks, no HTTP.

Why ~480 lines in one module: six engines of 20-60 lines each, measured by one loop and compared
side by side; one file keeps the comparison fair to read.

Each engine runs the same loop in `callers` concurrent asyncio tasks for `seconds` (after a
warm-up): pick `seats_per_op` distinct random seats among `n` (the contention level), lock them
all or none, and if granted hold them `hold_ms` and release them. Reported per engine and level:
lock attempts per second (each one all-or-none decision), granted locks per second, the share of
attempts refused because a seat was taken, and the lock call's latency.

Engines:
- `ray-batched`: `domain.inventory.SeatMap` inside a Ray actor (`BenchSeatMap` below, the same
  data structure TicketFlow's `SeatInventory` wraps), driven through a caller-side `Coalescer`
  that gathers lock/release requests into one actor call: up to `batch_max` of them, for
  `batch_wait_ms`, with at most `batch_in_flight` calls out at once (the saga actors' defaults:
  64, 0 ms, 1, i.e. each call carries what arrived while the previous one was out);
- `ray`: the same actor, one actor call per lock and per release;
- `redis`: the all-or-none Lua script (SET NX PX on every seat key; compare-and-delete release);
- `redis-batched`: the same scripts, coalesced by the same `Coalescer` into one pipelined round
  trip per batch: the counterpart of `ray-batched`, to tell batching from the actor itself;
- `pg-skip-locked`: one statement, `SELECT ... FOR UPDATE SKIP LOCKED` + `UPDATE` only if every seat
  was got (never waits);
- `pg-update`: a transaction with the conditional `UPDATE seats SET status = 'LOCKED' ... WHERE
  status = 'AVAILABLE'`, rolled back unless every seat changed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import asyncpg
import ray
import redis.asyncio as aioredis

from actors import coalescer
from actors.coalescer import Coalescer as ProductionCoalescer
from benchmarks.baselines.seatlocks import (
    CREATE_LOCK_SEATS,
    INSERT_LOCK_SEATS,
    PostgresSeatLocks,
    RedisSeatLocks,
)
from benchmarks.common import (
    REDIS_PREFIX,
    CpuMeter,
    fmt,
    fmt_ratio,
    latency_summary,
    log,
    markdown_table,
    new_schema_name,
    ratio,
)
from domain.inventory import SeatMap

ENGINES = ("ray-batched", "ray", "redis-batched", "redis", "pg-skip-locked", "pg-update")
LOCK_TTL_S = 300.0


@dataclass
class LockBenchConfig:
    levels: list[int] = field(default_factory=lambda: [100_000, 1000, 50])
    callers: int = 64
    seconds: float = 3.0
    warmup: float = 0.5
    seats_per_op: int = 2
    hold_ms: float = 0.0
    batch_max: int = coalescer.MAX_BATCH
    batch_wait_ms: float = coalescer.MAX_WAIT_SECONDS * 1000
    batch_in_flight: int = coalescer.MAX_IN_FLIGHT or 0  # 0: no limit
    engines: list[str] = field(default_factory=lambda: list(ENGINES))
    database_url: str = ""
    redis_url: str = ""

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> LockBenchConfig:
        engines = [e.strip() for e in args.engines.split(",") if e.strip()]
        unknown = [e for e in engines if e not in ENGINES]
        if unknown:
            raise SystemExit(
                f"unknown engine(s) {', '.join(unknown)}; choose from {', '.join(ENGINES)}"
            )
        return cls(
            levels=args.lock_seats,
            callers=args.lock_callers,
            seconds=args.lock_seconds,
            warmup=args.lock_warmup,
            seats_per_op=args.lock_seats_per_op,
            hold_ms=args.lock_hold_ms,
            batch_max=args.batch_max,
            batch_wait_ms=args.batch_wait_ms,
            batch_in_flight=args.batch_in_flight,
            engines=engines,
            database_url=args.database_url,
            redis_url=args.redis_url,
        )


# -- the seat-actor engine --------------------------------------------------------------------------
@ray.remote(num_cpus=0, max_restarts=0)
class BenchSeatMap:
    """A `SeatMap` for one benchmark event in a plain (synchronous, one call at a time) actor.

    Holds only in-memory state; not restarted; lives for one benchmark level.
    """

    def __init__(self, n_seats: int) -> None:
        self._map = SeatMap(seat_ids(n_seats))

    def lock(self, holder: str, seats: tuple[str, ...]) -> bool:
        return self._map.lock(holder, seats, ttl=LOCK_TTL_S, now=time.time()).ok

    def release(self, holder: str) -> None:
        self._map.release(holder)

    def apply(self, ops: list[tuple[str, str, tuple[str, ...]]]) -> list[bool]:
        """Many lock ("L") / release ("R") requests in one call, in order."""
        now = time.time()
        out: list[bool] = []
        for kind, holder, seats in ops:
            if kind == "L":
                out.append(self._map.lock(holder, seats, ttl=LOCK_TTL_S, now=now).ok)
            else:
                self._map.release(holder)
                out.append(True)
        return out


class Coalescer:
    """The coalescer the saga actors run (`actors/coalescer.py`), with a single key, so the
    benchmark measures exactly what ships. Batches are pipelined: a full batch goes out while
    earlier ones are in flight."""

    def __init__(
        self,
        submit: Callable[[list[Any]], Awaitable[list[Any]]],
        *,
        max_batch: int,
        max_wait: float,
        in_flight: int,
    ) -> None:
        self.calls = 0

        async def send(_key: str, ops: list[Any]) -> list[Any]:
            self.calls += 1
            return await submit(ops)

        self._inner: ProductionCoalescer[Any, Any] = ProductionCoalescer(
            send,
            max_batch=max_batch,
            max_wait=max_wait,
            max_in_flight=in_flight or None,
        )

    async def call(self, op: Any) -> Any:
        return await self._inner.submit("", op)


def seat_ids(n: int) -> tuple[str, ...]:
    return tuple(f"s{i}" for i in range(1, n + 1))


# -- engines ----------------------------------------------------------------------------------------
class LockEngine(Protocol):
    name: str

    async def start_level(self, n_seats: int) -> None: ...

    async def lock(self, holder: str, seats: tuple[str, ...]) -> bool: ...

    async def release(self, holder: str, seats: tuple[str, ...]) -> None: ...

    async def end_level(self) -> None: ...


class RayEngine:
    def __init__(self, *, batched: bool, max_batch: int, max_wait: float, in_flight: int) -> None:
        self.name = "ray-batched" if batched else "ray"
        self._batched = batched
        self._max_batch = max_batch
        self._max_wait = max_wait
        self._in_flight = in_flight
        self._actor: Any = None
        self._coalescer: Coalescer | None = None

    async def start_level(self, n_seats: int) -> None:
        self._actor = BenchSeatMap.remote(n_seats)  # type: ignore[attr-defined]
        await self._actor.lock.remote("warm-up", ())
        if self._batched:
            actor = self._actor

            async def submit(ops: list[Any]) -> list[Any]:
                result: list[Any] = await actor.apply.remote(ops)
                return result

            self._coalescer = Coalescer(
                submit,
                max_batch=self._max_batch,
                max_wait=self._max_wait,
                in_flight=self._in_flight,
            )

    async def lock(self, holder: str, seats: tuple[str, ...]) -> bool:
        if self._coalescer is not None:
            return bool(await self._coalescer.call(("L", holder, seats)))
        return bool(await self._actor.lock.remote(holder, seats))

    async def release(self, holder: str, seats: tuple[str, ...]) -> None:  # noqa: ARG002 - the map knows
        if self._coalescer is not None:
            await self._coalescer.call(("R", holder, ()))
        else:
            await self._actor.release.remote(holder)

    async def end_level(self) -> None:
        if self._actor is not None:
            ray.kill(self._actor)
        self._actor = None
        self._coalescer = None


class RedisEngine:
    def __init__(
        self,
        client: aioredis.Redis[bytes],
        prefix: str,
        *,
        batched: bool,
        max_batch: int,
        max_wait: float,
        in_flight: int,
    ) -> None:
        self.name = "redis-batched" if batched else "redis"
        self.prefix = prefix
        self._locks = RedisSeatLocks(client, prefix)
        self._event = ""
        self._batched = batched
        self._max_batch = max_batch
        self._max_wait = max_wait
        self._in_flight = in_flight
        self._coalescer: Coalescer | None = None

    async def start_level(self, n_seats: int) -> None:
        self._event = f"{self.name}-{n_seats}"
        if self._batched:
            locks, event = self._locks, self._event

            async def submit(ops: list[Any]) -> list[Any]:
                return await locks.apply(event, ops, int(LOCK_TTL_S * 1000))

            self._coalescer = Coalescer(
                submit,
                max_batch=self._max_batch,
                max_wait=self._max_wait,
                in_flight=self._in_flight,
            )

    async def lock(self, holder: str, seats: tuple[str, ...]) -> bool:
        if self._coalescer is not None:
            return bool(await self._coalescer.call(("L", holder, seats)))
        return await self._locks.lock(self._event, seats, holder, int(LOCK_TTL_S * 1000))

    async def release(self, holder: str, seats: tuple[str, ...]) -> None:
        if self._coalescer is not None:
            await self._coalescer.call(("R", holder, seats))
        else:
            await self._locks.release(self._event, seats, holder)

    async def end_level(self) -> None:
        await self._locks.delete_all()


class PostgresEngine:
    def __init__(self, pool: asyncpg.Pool, *, skip_locked: bool) -> None:
        self.name = "pg-skip-locked" if skip_locked else "pg-update"
        self._locks = PostgresSeatLocks(pool)
        self._pool = pool
        self._skip_locked = skip_locked
        self._event = ""

    async def start_level(self, n_seats: int) -> None:
        self._event = f"{self.name}-{n_seats}-{secrets.token_hex(3)}"
        async with self._pool.acquire() as conn:
            await conn.execute(INSERT_LOCK_SEATS, self._event, n_seats)
            await conn.execute("ANALYZE seats")

    async def lock(self, holder: str, seats: tuple[str, ...]) -> bool:
        if self._skip_locked:
            return await self._locks.lock_skip_locked(self._event, seats, holder, LOCK_TTL_S)
        return await self._locks.lock_conditional(self._event, seats, holder, LOCK_TTL_S)

    async def release(self, holder: str, seats: tuple[str, ...]) -> None:
        await self._locks.release(self._event, seats, holder)

    async def end_level(self) -> None:
        async with self._pool.acquire() as conn:
            await conn.execute("DELETE FROM seats WHERE event_id = $1", self._event)


# -- measuring --------------------------------------------------------------------------------------
async def measure(engine: LockEngine, n_seats: int, cfg: LockBenchConfig) -> dict[str, Any]:
    await engine.start_level(n_seats)
    ids = seat_ids(n_seats)
    k = min(cfg.seats_per_op, n_seats)
    hold = cfg.hold_ms / 1000
    attempts = granted = errors = 0
    latencies: list[float] = []
    start = time.perf_counter()
    measure_from = start + cfg.warmup
    end = measure_from + cfg.seconds
    cpu = CpuMeter()

    async def caller(index: int) -> None:
        nonlocal attempts, granted, errors
        rng = random.Random(index * 7919 + n_seats)
        n = 0
        while True:
            t0 = time.perf_counter()
            if t0 >= end:
                return
            seats = tuple(ids[i] for i in rng.sample(range(n_seats), k))
            holder = f"c{index}-{n}"
            n += 1
            try:
                ok = await engine.lock(holder, seats)
            except Exception:  # noqa: BLE001 - counted; a broken engine shows as errors, not a crash
                errors += 1
                await asyncio.sleep(0.01)
                continue
            t1 = time.perf_counter()
            if measure_from <= t1 < end:
                attempts += 1
                granted += ok
                latencies.append(t1 - t0)
            if ok:
                if hold:
                    await asyncio.sleep(hold)
                await engine.release(holder, seats)

    async def start_meter() -> None:
        await asyncio.sleep(max(0.0, measure_from - time.perf_counter()))
        cpu.start()

    meter = asyncio.get_running_loop().create_task(start_meter())
    try:
        await asyncio.gather(*(caller(i) for i in range(cfg.callers)))
    finally:
        await meter
        used = cpu.stop()
        await engine.end_level()
    return {
        "engine": engine.name,
        "seats": n_seats,
        "attempts_per_s": round(attempts / cfg.seconds, 1),
        "granted_per_s": round(granted / cfg.seconds, 1),
        "conflict_pct": round(100 * (attempts - granted) / attempts, 1) if attempts else None,
        "errors": errors,
        "lock_latency_ms": latency_summary(latencies),
        **used,
    }


def _ensure_ray() -> bool:
    """Connects to Ray (a private local one unless already connected); True if we started it."""
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.ERROR,
    )
    return True


async def run_lock_bench(cfg: LockBenchConfig) -> dict[str, Any]:
    """Every engine at every contention level; engines whose service is unreachable are skipped."""
    skipped: dict[str, str] = {}
    where: dict[str, str] = {}  # the Postgres schema and Redis prefix used (all removed afterwards)
    engines: list[LockEngine] = []
    cleanups: list[Callable[[], Awaitable[None]]] = []
    started_ray = False
    try:
        if {"ray", "ray-batched"} & set(cfg.engines):
            try:
                log("locks: starting Ray")
                started_ray = _ensure_ray()
                for batched in (True, False):
                    name = "ray-batched" if batched else "ray"
                    if name in cfg.engines:
                        engines.append(
                            RayEngine(
                                batched=batched,
                                max_batch=cfg.batch_max,
                                max_wait=cfg.batch_wait_ms / 1000,
                                in_flight=cfg.batch_in_flight,
                            )
                        )
            except Exception as exc:  # noqa: BLE001 - reported, the other engines still run
                for name in ("ray-batched", "ray"):
                    if name in cfg.engines:
                        skipped[name] = f"Ray unavailable: {exc}"
        redis_wanted = [e for e in ("redis-batched", "redis") if e in cfg.engines]
        if redis_wanted:
            client = aioredis.from_url(
                cfg.redis_url, max_connections=cfg.callers + 4, socket_connect_timeout=2
            )
            try:
                await client.ping()
                where["redis_prefix"] = f"{REDIS_PREFIX}locks:{secrets.token_hex(4)}:"
                for name in redis_wanted:
                    engines.append(
                        RedisEngine(
                            client,
                            where["redis_prefix"],
                            batched=name == "redis-batched",
                            max_batch=cfg.batch_max,
                            max_wait=cfg.batch_wait_ms / 1000,
                            in_flight=cfg.batch_in_flight,
                        )
                    )
                cleanups.append(client.aclose)  # type: ignore[attr-defined]
            except Exception as exc:  # noqa: BLE001
                for name in redis_wanted:
                    skipped[name] = f"Redis at {cfg.redis_url} unreachable: {exc}"
                await client.aclose()  # type: ignore[attr-defined]
        pg_wanted = [e for e in ("pg-skip-locked", "pg-update") if e in cfg.engines]
        if pg_wanted:
            try:
                pool, drop, where["postgres_schema"] = await _postgres_pool(cfg)
                cleanups.append(drop)
                for name in pg_wanted:
                    engines.append(PostgresEngine(pool, skip_locked=name == "pg-skip-locked"))
            except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                for name in pg_wanted:
                    skipped[name] = f"Postgres at {cfg.database_url} unreachable: {exc}"
        order = {name: i for i, name in enumerate(ENGINES)}
        engines.sort(key=lambda e: order[e.name])
        results: list[dict[str, Any]] = []
        for n_seats in cfg.levels:
            for engine in engines:
                log(
                    f"locks: {engine.name} at {n_seats} seats ({cfg.callers} callers, {cfg.seconds:.1f} s)"
                )
                results.append(await measure(engine, n_seats, cfg))
    finally:
        for cleanup in reversed(cleanups):
            try:
                await cleanup()
            except Exception as exc:  # noqa: BLE001 - keep cleaning up
                log(f"locks: clean-up failed: {exc}")
        if started_ray:
            ray.shutdown()
    params = asdict(cfg)
    return {
        "benchmark": "locks",
        "params": params,
        "results": results,
        "skipped": skipped,
        "where": where,
    }


async def _postgres_pool(
    cfg: LockBenchConfig,
) -> tuple[asyncpg.Pool, Callable[[], Awaitable[None]], str]:
    schema = new_schema_name("locks")
    conn = await asyncpg.connect(cfg.database_url, timeout=5)
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        await conn.execute(f'SET search_path TO "{schema}"')
        await conn.execute(CREATE_LOCK_SEATS)
    finally:
        await conn.close()

    async def no_reset(_conn: asyncpg.Connection) -> None:
        return None

    pool = await asyncpg.create_pool(
        cfg.database_url,
        min_size=min(cfg.callers, 32),
        max_size=min(cfg.callers, 32),
        server_settings={"search_path": schema},
        reset=no_reset,
    )

    async def drop() -> None:
        await pool.close()
        c = await asyncpg.connect(cfg.database_url, timeout=5)
        try:
            await c.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await c.close()

    return pool, drop, schema


# -- rendering --------------------------------------------------------------------------------------
def lock_rate(report: dict[str, Any], engine: str, seats: int) -> float | None:
    for r in report["results"]:
        if r["engine"] == engine and r["seats"] == seats:
            return float(r["attempts_per_s"])
    return None


def locks_markdown(report: dict[str, Any]) -> str:
    p = report["params"]
    levels: list[int] = p["levels"]
    engines = [e for e in ENGINES if any(r["engine"] == e for r in report["results"])]
    head = (
        f"### Lock engines alone\n\n{p['callers']} concurrent callers, {p['seats_per_op']} seats per all-or-none "
        f"lock, held {p['hold_ms']:g} ms then released, {p['seconds']:g} s per run after {p['warmup']:g} s of "
        f"warm-up; coalescing: up to {p['batch_max']} requests per actor call, waiting {p['batch_wait_ms']:g} ms, "
        f"{p.get('batch_in_flight') or 'any number of'} call(s) in flight. "
        "Figures: lock attempts/s (granted/s, % refused because a seat was taken; p99 ms of the lock call; "
        "the CPU share of a core this one caller process used, so 1.00 means the caller, not the engine, "
        "was the limit).\n\n"
    )
    header = ["engine"] + [f"{n:,} seats".replace(",", " ") for n in levels]
    rows = []
    by_key = {(r["engine"], r["seats"]): r for r in report["results"]}
    for e in engines:
        row = [e]
        for n in levels:
            r = by_key.get((e, n))
            if r is None:
                row.append("-")
                continue
            row.append(
                f"{fmt(r['attempts_per_s'], 0)} ({fmt(r['granted_per_s'], 0)}, {fmt(r['conflict_pct'])} %; "
                f"p99 {fmt(r['lock_latency_ms']['p99'])}; cpu {fmt(r['client_cpu_util'], 2)})"
            )
        rows.append(row)
    for base in ("redis", "redis-batched", "pg-skip-locked", "pg-update", "ray"):
        if "ray-batched" in engines and base in engines:
            rows.append(
                [f"ray-batched / {base}"]
                + [
                    fmt_ratio(
                        ratio(lock_rate(report, "ray-batched", n), lock_rate(report, base, n))
                    )
                    for n in levels
                ]
            )
    text = head + markdown_table(header, rows)
    if report["skipped"]:
        text += "\n\nSkipped: " + "; ".join(f"{k}: {v}" for k, v in report["skipped"].items())
    return text + "\n"
