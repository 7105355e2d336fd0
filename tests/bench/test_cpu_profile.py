"""The CPU profile tool (`python -m benchmarks.cpu_profile`): its /proc readings, its roles, and a
whole run against the plain baseline (seconds; TicketFlow itself is not started here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest
import pytest_asyncio

from benchmarks.common import default_database_url, default_redis_url
from benchmarks.cpu_profile import ServerScope, build_parser, profile_markdown, run_profile
from benchmarks.proc_cpu import (
    LOAD_GENERATOR,
    PG_BACKENDS,
    PG_SHARED,
    PhaseSampler,
    ProcStat,
    descendants,
    parse_stat,
    postgres_role,
    role_of,
)
from benchmarks.pyspy import short_frame, summarise
from benchmarks.services import MARKER_VAR, ServiceProcess, start_plain_service

BURN = "import time\nt = time.process_time()\nwhile time.process_time() - t < {s}: pass\ntime.sleep(30)"


def test_parse_stat_counts_fields_from_the_last_parenthesis() -> None:
    # A command name may hold spaces and parentheses (Ray's do not, but a thread's may).
    fields = ["S", "42"] + ["0"] * 9 + ["150", "50"] + ["0"] * 6 + ["777"] + ["0"] * 10
    text = "1234 (ray::a (b) c) " + " ".join(fields)
    assert parse_stat(text, 1234) == ProcStat(pid=1234, ppid=42, start_ticks=777, cpu_ticks=200)


@pytest.mark.parametrize(
    ("cmdline", "role"),
    [
        ("ray::SeatInventory.lock_many", "ray::SeatInventory"),
        ("ray::BookingSaga", "ray::BookingSaga"),
        ("ray::ServeReplica:ticketflow:Gateway", "Serve replica (Gateway)"),
        ("ray::IDLE", "ray::IDLE"),
        (
            "/x/site-packages/ray/core/src/ray/raylet/raylet --raylet_socket_name=/tmp/r",
            "ray: raylet",
        ),
        ("/x/ray/core/src/ray/gcs/gcs_server --gcs_server_port=1", "ray: gcs_server"),
        ("/tmp/ray/haproxy -f /tmp/cfg", "haproxy"),
        ("/venv/bin/python -m cli serve", "ticketflow serve (Ray driver)"),
        ("/venv/bin/python -u /x/ray/dashboard/dashboard.py --host=1", "ray: dashboard"),
        ("/usr/bin/sleep 5", "sleep"),
        ("/venv/bin/python -c import x", "python -c"),
        (
            "python3 -m benchmarks.baselines.plain_service --port 1",
            "python -m benchmarks.baselines.plain_service",
        ),
        ("", "other"),
    ],
)
def test_role_of_names_the_part_a_server_process_plays(cmdline: str, role: str) -> None:
    assert role_of(cmdline) == role


def test_postgres_role_keeps_the_backends_of_the_servers_database_only() -> None:
    ours = "postgres: 15/main: postgres tf_bench_app_1 127.0.0.1(5000) idle"
    other = "postgres: 15/main: postgres tf_test_other 127.0.0.1(5001) INSERT"
    assert postgres_role(ours, "tf_bench_app_1") == PG_BACKENDS
    assert postgres_role(other, "tf_bench_app_1") is None
    assert postgres_role(other, None) == PG_BACKENDS
    assert postgres_role("postgres: 15/main: walwriter ", "tf_bench_app_1") == PG_SHARED
    assert postgres_role("postgres: checkpointer", None) == PG_SHARED  # no cluster name
    assert postgres_role("/usr/lib/postgresql/15/bin/postgres -D /x", None) is None


def test_descendants_follow_the_whole_tree() -> None:
    stats = [ProcStat(p, pp, 0, 0) for p, pp in [(10, 1), (11, 10), (12, 11), (13, 1), (14, 12)]]
    assert descendants(10, stats) == {10, 11, 12, 14}


def test_py_spy_summary_counts_self_and_our_inclusive_frames() -> None:
    collapsed = (
        "main_loop (/v/site-packages/ray/_private/worker.py:900);"
        "lock_many (/w/actors/seat_inventory.py:120);lock (/w/domain/inventory.py:40) 30\n"
        "main_loop (/v/site-packages/ray/_private/worker.py:900) 70\n"
    )
    s = summarise(collapsed)
    assert s["samples"] == 100
    assert s["self"][0] == ("main_loop (ray/_private/worker.py)", 70)
    assert ("lock_many (actors/seat_inventory.py)", 30) in s["ours_inclusive"]
    assert ("lock (domain/inventory.py)", 30) in s["ours_inclusive"]
    assert short_frame("weird frame") == "weird frame"


def test_the_sampler_counts_the_cpu_of_marked_processes_including_one_born_in_the_phase() -> None:
    marker = "cpu-profile-test"
    env = {**os.environ, MARKER_VAR: marker}
    before = subprocess.Popen([sys.executable, "-c", BURN.format(s=0.0)], env=env)
    unmarked = subprocess.Popen([sys.executable, "-c", BURN.format(s=0.6)])
    try:
        time.sleep(0.3)
        sampler = PhaseSampler(ServerScope(marker=marker, server_pid=None, database="no_such_db"))
        sampler.begin()
        born = subprocess.Popen([sys.executable, "-c", BURN.format(s=0.5)], env=env)
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                sampler.sample()
                profile_so_far = sampler._seen  # noqa: SLF001 - waiting for the burn to finish
                if any(s.last_ticks - s.first_ticks >= 50 for s in profile_so_far.values()):
                    break
                time.sleep(0.2)
            profile = sampler.end()
        finally:
            born.kill()
            born.wait()
    finally:
        for p in (before, unmarked):
            p.kill()
            p.wait()
    # Both marked processes are "python -c" by their command line; the unmarked burner is not in
    # scope, and the one running before the phase had burnt its CPU before it began.
    assert profile.processes.get("python -c", 0) == 2
    assert 0.45 <= profile.by_role["python -c"] < 2.0
    assert LOAD_GENERATOR in profile.by_role
    assert profile.machine_busy_s >= profile.by_role["python -c"] * 0.8


# -- a whole run against the plain baseline ---------------------------------------------------------
@pytest_asyncio.fixture(loop_scope="session")
async def plain_pg() -> AsyncIterator[ServiceProcess]:
    service = await start_plain_service(
        "plain-pg",
        database_url=default_database_url(),
        redis_url=default_redis_url(),
        payment_latency_ms=2,
        admin_email="admin@ticketflow.dev",
        admin_password="Admin1234!",
    )
    yield service
    await service.stop()


@pytest.mark.asyncio(loop_scope="session")
async def test_a_profiled_onsale_reports_ms_per_confirmed_booking_by_role(
    plain_pg: ServiceProcess,
) -> None:
    args = build_parser().parse_args(
        [
            "--url",
            plain_pg.url,
            "--server-pid",
            str(plain_pg.proc.pid),
            "--database",
            urlsplit(default_database_url()).path.lstrip("/") or "postgres",
            "--seats",
            "40",
            "--buyers",
            "5",
            "--attempts",
            "60",
            "--concurrency",
            "8",
            "--duration",
            "20",
            "--grace",
            "5",
            "--setup-concurrency",
            "5",
            "--sample-interval",
            "0.2",
            "--no-progress",
            "--label",
            "plain-pg",
        ]
    )
    report = await run_profile(args)
    cpu = report["cpu"]
    roles = {r["role"]: r for r in cpu["roles"]}
    assert report["checks"]["passed"] and cpu["confirmed"] == report["results"]["confirmed"] > 0
    # The baseline's own process (python -m benchmarks.baselines.plain_service) and the client.
    server = [r for name, r in roles.items() if name.startswith("python -m benchmarks.baselines")]
    assert server and server[0]["cpu_s"] > 0 and server[0]["ms_per_confirmed"] > 0
    assert LOAD_GENERATOR in roles and PG_BACKENDS in roles
    total = sum(r["cpu_s"] for r in cpu["roles"])
    assert cpu["total_cpu_s"] == pytest.approx(total, abs=0.01)
    assert cpu["total_ms_per_confirmed"] == pytest.approx(1000 * total / cpu["confirmed"], rel=0.01)
    # Its database's counters, per confirmed booking: each booking was at least one transaction.
    assert cpu["db_per_confirmed"]["xact_commit"] >= 1 and "tup_updated" in cpu["db_per_confirmed"]
    # The checks after the phase are measured apart: work the phase left behind shows there.
    assert cpu["checks_s"] > 0 and roles[LOAD_GENERATOR]["ms_per_confirmed_in_checks"] is not None
    text = profile_markdown(cpu)
    assert "ms per confirmed booking" in text and "**total**" in text
    json.dumps(report)  # the report is JSON as written by --json
