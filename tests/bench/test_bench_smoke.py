"""Smoke runs of the benchmarks, seconds long, so that they cannot rot.

The on-sale scenario runs in-process against the plain baseline service (started here as a
subprocess), not against TicketFlow, to keep this file independent of the Serve session fixture.
Postgres and Redis come from DATABASE_URL / REDIS_URL or the benchmarks' defaults; a test that
needs one of them is skipped, with the reason, only when that server is unreachable.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from benchmarks.common import default_database_url, default_redis_url, latency_summary, percentile
from benchmarks.locks import Coalescer, LockBenchConfig, locks_markdown, run_lock_bench
from benchmarks.onsale import OnsaleConfig, SeatInfo, SeatView, report_markdown, run_onsale
from benchmarks.services import ServiceProcess, start_plain_service

ONSALE_RESULT_KEYS = {
    "duration_s",
    "attempts",
    "bookings_posted",
    "retries",
    "confirmed",
    "confirmed_seats",
    "failed",
    "confirmed_per_s",
    "sold_out",
    "time_to_sell_out_s",
    "http_requests",
    "http_requests_per_s",
    "latency_202_ms",
    "latency_e2e_ms",
    "latency_e2e_confirmed_ms",
    "errors",
    "client_cpu_s",
    "client_cpu_util",
}
LATENCY_KEYS = {"n", "p50", "p95", "p99", "mean", "max"}


async def _postgres_problem(url: str) -> str | None:
    try:
        conn = await asyncpg.connect(url, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return f"Postgres at {url} is unreachable ({type(exc).__name__}: {exc})"
    await conn.close()
    return None


async def _redis_problem(url: str) -> str | None:
    client = aioredis.from_url(url, socket_connect_timeout=2)
    try:
        await client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure means unreachable here
        return f"Redis at {url} is unreachable ({type(exc).__name__}: {exc})"
    finally:
        await client.aclose()
    return None


@pytest_asyncio.fixture(loop_scope="session")
async def bench_postgres_url() -> str:
    url = default_database_url()
    problem = await _postgres_problem(url)
    if problem:
        pytest.skip(problem)
    return url


@pytest_asyncio.fixture(loop_scope="session")
async def bench_redis_url() -> str:
    url = default_redis_url()
    problem = await _redis_problem(url)
    if problem:
        pytest.skip(problem)
    return url


@pytest_asyncio.fixture(loop_scope="session", params=["plain-pg", "plain-redis"])
async def plain_service(
    request: pytest.FixtureRequest, bench_postgres_url: str
) -> AsyncIterator[ServiceProcess]:
    redis_url = default_redis_url()
    if request.param == "plain-redis":
        problem = await _redis_problem(redis_url)
        if problem:
            pytest.skip(problem)
    service = await start_plain_service(
        request.param,
        database_url=bench_postgres_url,
        redis_url=redis_url,
        payment_latency_ms=2,
        admin_email="admin@ticketflow.dev",
        admin_password="Admin1234!",
    )
    yield service
    await service.stop()
    assert service.proc.returncode is not None


# -- pure parts ---------------------------------------------------------------------------------------
def test_percentile_and_latency_summary_use_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert latency_summary([]) == {
        "n": 0,
        "p50": None,
        "p95": None,
        "p99": None,
        "mean": None,
        "max": None,
    }
    assert latency_summary([0.001, 0.002])["max"] == 2.0


def test_seat_view_picks_adjacent_seats_in_one_row_and_forgets_discarded_ones() -> None:
    import random

    seats = [SeatInfo(f"seat_{row}{n}", row, n) for row in "AB" for n in range(1, 6)]
    view = SeatView(seats, random.Random(3))
    view.discard(["seat_A2", "seat_A4", "seat_B3"])
    for _ in range(50):
        picked = view.pick(2, adjacent=True)
        rows = {s[5] for s in picked}
        numbers = sorted(int(s[6:]) for s in picked)
        assert len(rows) == 1 and numbers[1] - numbers[0] == 1
        assert not {"seat_A2", "seat_A4", "seat_B3"} & set(picked)
    view.discard([s.id for s in seats])
    assert len(view) == 0 and view.pick(2, adjacent=False) == []


async def test_coalescer_batches_concurrent_calls_and_answers_each_caller() -> None:
    batches: list[int] = []

    async def submit(ops: list[int]) -> list[int]:
        batches.append(len(ops))
        await asyncio.sleep(0.001)
        return [op * 2 for op in ops]

    coalescer = Coalescer(submit, max_batch=50, max_wait=0.005, in_flight=1)
    results = await asyncio.gather(*(coalescer.call(i) for i in range(120)))
    assert results == [i * 2 for i in range(120)]
    assert sum(batches) == 120 and max(batches) <= 50 and len(batches) <= 4


# -- the on-sale scenario against a plain baseline ------------------------------------------------------
@pytest.mark.asyncio(loop_scope="session")
async def test_onsale_sells_a_tiny_event_out_with_no_oversell_and_nothing_stuck(
    plain_service: ServiceProcess,
) -> None:
    config = OnsaleConfig(
        url=plain_service.url,
        seats=20,
        buyers=5,
        attempts=30,
        concurrency=8,
        retries=3,
        duration=20,
        poll_interval=0.005,
        poll_max_interval=0.05,
        grace=5,
        setup_concurrency=5,
        decline_fraction=0.2,
        seed=1,
        progress=False,
        label=plain_service.label,
    )
    report = await run_onsale(config)

    assert report["benchmark"] == "onsale" and report["label"] == plain_service.label
    assert "admin_password" not in report["params"]
    results, checks = report["results"], report["checks"]
    assert ONSALE_RESULT_KEYS <= set(results)
    for key in ("latency_202_ms", "latency_e2e_ms", "latency_e2e_confirmed_ms"):
        assert set(results[key]) == LATENCY_KEYS
    assert results["errors"] == {}, results["errors"]
    assert results["confirmed"] > 0 and results["latency_202_ms"]["n"] == results["bookings_posted"]
    assert results["sold_out"] and results["confirmed_seats"] == 20
    assert checks["oversold_seats"] == 0
    assert checks["stuck_pending"] == 0
    assert checks["charges_without_booking"] == 0
    assert checks["reserved_mismatch"] == 0
    assert checks["confirmed_seats_server"] == 20 and checks["inventory_summary"]["reserved"] == 20
    assert checks["passed"] is True
    # Declined cards were charged nothing, and the check looked at every one of them.
    declined = results["failed"].get("PAYMENT_DECLINED", 0)
    assert checks["failed_bookings_checked_for_charges"] >= declined
    assert "Checks: PASSED" in report_markdown(report)


# -- the lock engines -------------------------------------------------------------------------------
def _tiny_lock_config(engines: list[str], database_url: str, redis_url: str) -> LockBenchConfig:
    return LockBenchConfig(
        levels=[1000, 20],
        callers=16,
        seconds=0.3,
        warmup=0.1,
        engines=engines,
        database_url=database_url,
        redis_url=redis_url,
    )


def _assert_lock_results(report: dict[str, object], engines: list[str]) -> None:
    results = report["results"]
    assert isinstance(results, list)
    assert report["skipped"] == {}
    assert sorted((r["engine"], r["seats"]) for r in results) == sorted(
        (e, n) for e in engines for n in (1000, 20)
    )
    for r in results:
        assert r["errors"] == 0, r
        assert r["attempts_per_s"] > 0 and r["granted_per_s"] > 0, r
        assert r["granted_per_s"] <= r["attempts_per_s"]
    high = [r for r in results if r["seats"] == 20]
    assert all(r["conflict_pct"] > 0 for r in high), high  # 16 callers on 20 seats do collide


@pytest.mark.asyncio(loop_scope="session")
async def test_lock_engines_ray_actor_with_and_without_coalescing() -> None:
    engines = ["ray-batched", "ray"]
    report = await run_lock_bench(
        _tiny_lock_config(engines, default_database_url(), default_redis_url())
    )
    _assert_lock_results(report, engines)
    assert "ray-batched / ray" in locks_markdown(report)


@pytest.mark.asyncio(loop_scope="session")
async def test_lock_engines_redis_lua_script_with_and_without_pipelining(
    bench_redis_url: str,
) -> None:
    engines = ["redis-batched", "redis"]
    report = await run_lock_bench(
        _tiny_lock_config(engines, default_database_url(), bench_redis_url)
    )
    _assert_lock_results(report, engines)
    client = aioredis.from_url(bench_redis_url)
    try:
        assert [
            k async for k in client.scan_iter(match=report["where"]["redis_prefix"] + "*")
        ] == []
    finally:
        await client.aclose()


@pytest.mark.asyncio(loop_scope="session")
async def test_lock_engines_postgres_skip_locked_and_conditional_update(
    bench_postgres_url: str,
) -> None:
    engines = ["pg-skip-locked", "pg-update"]
    report = await run_lock_bench(
        _tiny_lock_config(engines, bench_postgres_url, default_redis_url())
    )
    _assert_lock_results(report, engines)
    conn = await asyncpg.connect(bench_postgres_url)
    try:
        left = await conn.fetchval(
            "SELECT count(*) FROM pg_namespace WHERE nspname = $1",
            report["where"]["postgres_schema"],
        )
    finally:
        await conn.close()
    assert left == 0
