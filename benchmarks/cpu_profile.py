"""`python -m benchmarks.cpu_profile`: ms of CPU per confirmed booking, per process role, during an on-sale.

    python -m benchmarks.cpu_profile --seats 6000 --attempts 20000 --buyers 50 [--py-spy]
    python -m benchmarks.cpu_profile --url http://127.0.0.1:3000 --server-pid PID --database NAME

Without `--url` it starts `ticketflow serve` itself, as `bench compare` does (a scratch database,
rate limits off, `--payment-latency-ms` of simulated charge, WARNING logs), from this checkout or
from `--server-root DIR` (another checkout: before/after comparisons in one sitting), runs the
on-sale scenario of `bench onsale` (same options) against it and stops it. Around the booking
phase it reads every process's CPU time from /proc (`benchmarks.proc_cpu`): the server's (found
by the marker `bench` gives every process it starts, or with `--url` as the descendants of
`--server-pid`), the Postgres backends of its database, and its own (the load generator). It
prints the ms of CPU per confirmed booking of each role; `--py-spy` also samples the busiest actor
processes for a while and prints where inside them the time goes.

Linux only. The figures are CPU time, not wall time, so they mean something on a shared machine,
but contention inflates them somewhat: compare before and after in the same sitting, interleaved.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from benchmarks.common import default_database_url, default_redis_url, markdown_table
from benchmarks.httpclient import HttpClient, open_client
from benchmarks.onsale import OnsaleConfig, OnsaleRun, SetupError, drive
from benchmarks.options import add_onsale_options, onsale_config, server_env_option
from benchmarks.proc_cpu import (
    LOAD_GENERATOR,
    CpuProfile,
    PhaseSampler,
    all_pids,
    descendants,
    postgres_role,
    read_cmdline,
    read_environ_has,
    read_stat,
    role_of,
)
from benchmarks.pyspy import PySpy
from benchmarks.services import (
    MARKER_VAR,
    PROJECT_ROOT,
    ServiceProcess,
    start_ticketflow,
)


class ServerScope:
    """Which processes are the server's, the database's and the load generator's, and their roles.

    A process's membership is decided once (its environment or parent does not change); its role
    is read again at every sample, because a Ray worker's title names its actor only once it has one.
    """

    def __init__(self, *, marker: str | None, server_pid: int | None, database: str | None) -> None:
        self._marker = f"{MARKER_VAR}={marker}".encode() if marker else None
        self._server_pid = server_pid
        self._database = database
        self._member: dict[tuple[int, int], str | None] = {}  # "server", a postgres role, or None
        self._self = os.getpid()

    def __call__(self) -> Mapping[int, str]:
        stats = [s for s in (read_stat(p) for p in all_pids()) if s is not None]
        tree = descendants(self._server_pid, stats) if self._server_pid else set()
        roles: dict[int, str] = {self._self: LOAD_GENERATOR}
        for s in stats:
            if s.pid == self._self:
                continue
            key = (s.pid, s.start_ticks)
            if key not in self._member:
                self._member[key] = self._membership(s.pid, tree)
            member = self._member[key]
            if member == "server":
                roles[s.pid] = role_of(read_cmdline(s.pid))
            elif member is not None:
                roles[s.pid] = member
        return roles

    def _membership(self, pid: int, tree: set[int]) -> str | None:
        cmdline = read_cmdline(pid)
        if cmdline.startswith("postgres:"):
            return postgres_role(cmdline, self._database)
        if self._marker is not None and read_environ_has(pid, self._marker):
            return "server"
        if pid in tree:
            return "server"
        return None


# Per-database counters of pg_stat_database: unlike CPU time they do not depend on what else the
# machine runs, so a statement or an update saved shows there exactly.
_DB_COUNTERS = ("xact_commit", "xact_rollback", "tup_inserted", "tup_updated", "tup_deleted")
# An idle backend reports its pending counters within 10 s (PGSTAT_IDLE_INTERVAL), a busy one
# every second: the counters are read after that long a wait, before and after the phase.
_STATS_FLUSH_SECONDS = 10.5


class DbCounters:
    """Reads the server database's pg_stat_database row (on the Postgres server `database_url`)."""

    def __init__(self, database_url: str, database: str) -> None:
        self._url = database_url
        self._database = database

    async def read(self) -> dict[str, int]:
        import asyncpg

        conn = await asyncpg.connect(self._url, timeout=10)
        try:
            row = await conn.fetchrow(
                "SELECT " + ", ".join(_DB_COUNTERS) + " FROM pg_stat_database WHERE datname = $1",
                self._database,
            )
        finally:
            await conn.close()
        return {k: int(row[k]) for k in _DB_COUNTERS} if row else {}


class ProfiledRun(OnsaleRun):
    """The on-sale scenario with the CPU of every process in scope read around its booking phase
    (and the database's counters, with a wait of `_STATS_FLUSH_SECONDS` before each reading)."""

    def __init__(
        self,
        config: OnsaleConfig,
        client: HttpClient,
        *,
        sampler: PhaseSampler,
        interval: float,
        spy: PySpy | None,
        counters: DbCounters | None = None,
    ) -> None:
        super().__init__(config, client)
        self.counters = counters
        self.db_delta: dict[str, int] = {}
        self.sampler = sampler
        self.interval = interval
        self.spy = spy
        self.profile: CpuProfile | None = None
        self.after: CpuProfile | None = None  # the checks that follow the phase

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.sampler.sample()

    async def booking_phase(self) -> dict[str, Any]:
        before: dict[str, int] = {}
        if self.counters:
            await asyncio.sleep(_STATS_FLUSH_SECONDS)  # the set-up's counters all reported first
            before = await self.counters.read()
        self.sampler.begin()
        ticker = asyncio.create_task(self._tick())
        spying = asyncio.create_task(self.spy.record(self.sampler.select)) if self.spy else None
        try:
            return await super().booking_phase()
        finally:
            ticker.cancel()
            self.profile = self.sampler.end()
            if spying is not None:
                await spying
            if self.counters:
                await asyncio.sleep(_STATS_FLUSH_SECONDS)
                after = await self.counters.read()
                self.db_delta = {k: after[k] - before[k] for k in after if k in before}

    async def checks(self) -> dict[str, Any]:
        # Work the phase left behind (the notifier's backlog, sagas still running) is done while
        # the checks run, beside the checks' own requests: reported apart, not hidden.
        after = PhaseSampler(self.sampler.select)
        after.begin()
        try:
            return await super().checks()
        finally:
            self.after = after.end()


def profile_report(
    profile: CpuProfile,
    confirmed: int,
    after: CpuProfile | None = None,
    db_delta: dict[str, int] | None = None,
) -> dict[str, Any]:
    per = profile.per_booking_ms(confirmed)
    later = after.per_booking_ms(confirmed) if after is not None else {}
    roles = profile.ordered_roles()
    ours = profile.total_s
    return {
        "confirmed": confirmed,
        "phase_s": round(profile.seconds, 2),
        "total_cpu_s": round(ours, 2),
        "total_ms_per_confirmed": round(1000 * ours / confirmed, 2) if confirmed else None,
        "machine_busy_s": round(profile.machine_busy_s, 2),
        "other_work_on_machine_s": round(max(0.0, profile.machine_busy_s - ours), 2),
        "cpus": profile.cpus,
        "sampler_cpu_s": round(profile.sampler_s, 3),
        "roles": [
            {
                "role": r,
                "processes": profile.processes.get(r, 0),
                "cpu_s": round(profile.by_role[r], 3),
                "ms_per_confirmed": round(per[r], 3) if r in per else None,
                "ms_per_confirmed_in_checks": round(later[r], 3) if r in later else None,
            }
            for r in roles
        ],
        "checks_s": round(after.seconds, 2) if after is not None else None,
        # The database's transactions and rows written per confirmed booking over the phase.
        "db_per_confirmed": {k: round(v / confirmed, 2) for k, v in (db_delta or {}).items()}
        if confirmed
        else {},
    }


def profile_markdown(report: dict[str, Any]) -> str:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    rows = [
        (
            r["role"],
            str(r["processes"]),
            f"{r['cpu_s']:.2f}",
            ms(r["ms_per_confirmed"]),
            ms(r.get("ms_per_confirmed_in_checks")),
        )
        for r in report["roles"]
    ]
    total = report["total_ms_per_confirmed"]
    rows.append(("**total**", "", f"{report['total_cpu_s']:.2f}", f"**{ms(total)}**", ""))
    head = (
        f"### CPU per confirmed booking\n\n{report['confirmed']} confirmed bookings in a "
        f"{report['phase_s']:.1f} s booking phase. The machine's {report['cpus']} CPUs were busy "
        f"{report['machine_busy_s']:.1f} s, {report['other_work_on_machine_s']:.1f} s of it outside "
        f"the processes below (other work on the machine: it competed for the same cores). The "
        f"sampler's own {report['sampler_cpu_s']:.2f} s is not in the load generator's row. The "
        f"last column is the CPU of the {report.get('checks_s') or 0:.1f} s of checks after the "
        "phase, per confirmed booking: work the phase left behind (the notifier's backlog) beside "
        "the checks' own requests.\n\n"
    )
    db = report.get("db_per_confirmed") or {}
    if db:
        head += (
            "Postgres, per confirmed booking (pg_stat_database, the server's database): "
            + ", ".join(f"{k} {v:.2f}" for k, v in db.items())
            + ".\n\n"
        )
    return (
        head
        + markdown_table(
            ["role", "processes", "CPU s", "ms per confirmed booking", "in the checks after"],
            rows,
        )
        + "\n"
    )


async def run_profile(args: argparse.Namespace) -> dict[str, Any]:
    service: ServiceProcess | None = None
    if args.url:
        url, marker, database = args.url, None, args.database
    else:
        service = await start_ticketflow(
            root=args.server_root.resolve(),
            database_url=args.database_url,
            redis_url=args.redis_url,
            payment_latency_ms=args.payment_latency_ms,
            admin_email=args.admin_email,
            admin_password=args.admin_password,
            server_env=args.server_env,
        )
        url, marker, database = service.url, service.marker, service.database
    try:
        config = onsale_config(args, url, label=args.label or str(args.server_root))
        config.validate()
        select: Callable[[], Mapping[int, str]] = ServerScope(
            marker=marker, server_pid=args.server_pid, database=database
        )
        spy = PySpy(seconds=args.py_spy, out_dir=args.py_spy_dir) if args.py_spy else None
        client = open_client(
            config.http_client,
            config.url,
            pool=max(config.concurrency, config.setup_concurrency) + 4,
            timeout=config.request_timeout,
        )
        try:
            counters = DbCounters(args.database_url, database) if database else None
            run = ProfiledRun(
                config,
                client,
                sampler=PhaseSampler(select),
                interval=args.sample_interval,
                spy=spy,
                counters=counters,
            )
            report = await drive(
                run, config, f"set-up ({config.seats} seats, {config.buyers} buyers)"
            )
        finally:
            await client.aclose()
        assert run.profile is not None
        report["cpu"] = profile_report(
            run.profile, report["results"]["confirmed"], run.after, run.db_delta
        )
        if spy is not None:
            report["py_spy"] = spy.summary
        report["params"]["server_root"] = str(args.server_root)
        return report
    finally:
        if service is not None:
            await service.stop()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.cpu_profile",
        description="ms of CPU per confirmed booking, per process role, during an on-sale",
    )
    add_onsale_options(
        p,
        url_required=False,
        url_help="a running TicketFlow server (give --server-pid and --database too); "
        "without it, one is started from --server-root and stopped afterwards",
    )
    g = p.add_argument_group("profile")
    g.add_argument("--server-pid", type=int, help="with --url: the `ticketflow serve` process")
    g.add_argument(
        "--database", help="with --url: the server's database (default: every database's backends)"
    )
    g.add_argument(
        "--server-root",
        type=Path,
        default=PROJECT_ROOT,
        help="checkout whose code the started server runs (default: this one)",
    )
    g.add_argument(
        "--server-env",
        type=server_env_option,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an extra setting for the started server (repeatable)",
    )
    g.add_argument(
        "--database-url",
        default=default_database_url(),
        help="Postgres server for the scratch database",
    )
    g.add_argument("--redis-url", default=default_redis_url(), help="Redis for the started server")
    g.add_argument(
        "--payment-latency-ms", type=int, default=5, help="simulated charge (default: %(default)s)"
    )
    g.add_argument(
        "--sample-interval",
        type=float,
        default=1.0,
        help="seconds between readings, so exiting processes count up to their last (default: %(default)s)",
    )
    g.add_argument(
        "--py-spy",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="also sample the busiest roles' processes with py-spy for this long (0: no)",
    )
    g.add_argument(
        "--py-spy-dir", type=Path, default=None, help="keep py-spy's collapsed stacks here"
    )
    g.add_argument("--label", default="", help="a name for this run in the report")
    g.add_argument("--json", metavar="PATH", help="also write the report as JSON to PATH")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.url and args.server_pid is None:
        print(
            "error: --url needs --server-pid (the server's processes are its descendants)",
            file=sys.stderr,
        )
        return 2
    try:
        report = asyncio.run(run_profile(args))
    except SetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str) + "\n")
    r = report["results"]
    print(
        f"{report['label']}: {r['confirmed']} confirmed ({r['confirmed_per_s']}/s), "
        f"checks {'PASSED' if report['checks']['passed'] else 'FAILED'}\n"
    )
    print(profile_markdown(report["cpu"]))
    if "py_spy" in report:
        print(PySpy.markdown(report["py_spy"]))
    return 0 if report["checks"]["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
