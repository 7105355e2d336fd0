"""`bench compare`: TicketFlow and the usual designs measured in one run, side by side.

1. The HTTP floor: `GET /health` at the scenario's concurrency for `--floor-seconds`, through the
   same server (for TicketFlow: the same Serve proxy and Gateway deployment as the bookings).
2. The on-sale scenario (`benchmarks.onsale`) against TicketFlow and against each baseline
   service (`benchmarks.baselines.plain_service`). TicketFlow runs first: started here
   (`benchmarks.services.start_ticketflow`, a scratch database, the same `--payment-latency-ms`
   as the baselines) unless `--url` names a running server or `--no-ticketflow` leaves it out.
   Every target started here gets a free 127.0.0.1 port and is stopped, with all its processes
   and its scratch state, before the next one starts: no two servers compete for the two cores or
   for Postgres's connections. A server given by `--url` stays up while the baselines run.
   `pretix` among `--baselines` adds pretix, the open-source ticket shop, installed on first use in
   its own virtual environment and driven through its REST order creation (`benchmarks.pretix`).
3. The lock engines alone (`benchmarks.locks`).

Ratios are always "first target / other target" (TicketFlow first unless `--no-ticketflow`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.common import (
    CpuMeter,
    fmt,
    fmt_ratio,
    latency_summary,
    log,
    markdown_table,
    ratio,
    run_async,
)
from benchmarks.httpclient import TransportError, open_client
from benchmarks.locks import LockBenchConfig, locks_markdown, run_lock_bench
from benchmarks.medians import median_summary, medians_markdown
from benchmarks.onsale import SetupError, mode_text, run_onsale, summary_rows
from benchmarks.options import onsale_config
from benchmarks.pretix.scenario import run_pretix_onsale
from benchmarks.pretix.server import HEALTH_PATH as PRETIX_HEALTH_PATH
from benchmarks.pretix.server import PretixServer, start_pretix
from benchmarks.services import BASELINES, ServiceProcess, start_plain_service, start_ticketflow

# Targets `--baselines` may name: the plain services, and pretix (a real product, not ours).
PRETIX = "pretix"
KNOWN_BASELINES = (*BASELINES, PRETIX)


async def http_floor(
    url: str,
    *,
    concurrency: int,
    seconds: float,
    client_kind: str,
    path: str = "/health",
) -> dict[str, Any]:
    """GET `path` (the health route) from `concurrency` workers for `seconds`: the most this server
    path can answer."""
    client = open_client(client_kind, url, pool=concurrency, timeout=30.0)
    latencies: list[float] = []
    errors = 0
    end = 0.0

    async def worker() -> None:
        nonlocal errors
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            try:
                status, _body, _headers = await client.request("GET", path)
            except TransportError:
                errors += 1
                continue
            if status == 200:
                latencies.append(time.perf_counter() - t0)
            else:
                errors += 1

    try:
        # A short warm-up opens the connections before the clock starts.
        end = time.perf_counter() + min(0.5, seconds / 4)
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        latencies.clear()
        errors = 0
        cpu = CpuMeter()
        cpu.start()
        t0 = time.perf_counter()
        end = t0 + seconds
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    finally:
        await client.aclose()
    return {
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "latency_ms": latency_summary(latencies),
        "errors": errors,
        **cpu.stop(),
    }


def machine_info() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


async def _compare(args: argparse.Namespace) -> dict[str, Any]:
    baselines = (
        []
        if args.baselines.strip() == "none"
        else [b.strip() for b in args.baselines.split(",") if b.strip()]
    )
    unknown = [b for b in baselines if b not in KNOWN_BASELINES]
    if unknown:
        raise SystemExit(
            f"unknown baseline(s) {', '.join(unknown)}; choose from {', '.join(KNOWN_BASELINES)} or none"
        )
    targets: list[tuple[str, str | None]] = []
    if args.url:
        targets.append(("ticketflow", args.url.rstrip("/")))
    elif not args.no_ticketflow:
        targets.append(("ticketflow", None))
    targets += [(b, None) for b in baselines]
    report: dict[str, Any] = {
        "benchmark": "compare",
        "started_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine_info(),
        "payment_latency_ms": args.payment_latency_ms,
        "ticketflow": ticketflow_setup(args),
        "floor": [],
        "onsale": [],
        "locks": None,
        "failures": {},
        "skipped": {},
    }
    for label, url in targets:
        if (refusal := mode_refusal(label, args)) is not None:
            log(f"compare: {label} skipped: {refusal}")
            report["skipped"][label] = refusal
            continue
        service: ServiceProcess | PretixServer | None = None
        try:
            if url is None:
                log(f"compare: starting {label}")
                service = await (_start_pretix(args) if label == PRETIX else _start(label, args))
                url = service.url
            if args.floor_seconds > 0:
                log(f"compare: HTTP floor of {label} ({args.floor_seconds:g} s)")
                floor = await http_floor(
                    url,
                    concurrency=args.concurrency,
                    seconds=args.floor_seconds,
                    client_kind=args.http_client,
                    path=PRETIX_HEALTH_PATH if label == PRETIX else "/health",
                )
                report["floor"].append({"label": label, "url": url, **floor})
            if not args.skip_onsale:
                if isinstance(service, PretixServer):
                    report["pretix"] = pretix_setup(args, service)
                    report["onsale"].append(
                        await run_pretix_onsale(
                            onsale_config(args, url, label),
                            organizer=service.organizer,
                            token=service.token,
                        )
                    )
                else:
                    report["onsale"].append(await run_onsale(onsale_config(args, url, label)))
        except (SetupError, RuntimeError) as exc:
            log(f"compare: {label} failed: {exc}")
            report["failures"][label] = str(exc)
        finally:
            if service is not None:
                log(f"compare: stopping {label}")
                await service.stop()
    if not args.skip_locks:
        report["locks"] = await run_lock_bench(LockBenchConfig.from_args(args))
    report["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return report


def mode_refusal(label: str, args: argparse.Namespace) -> str | None:
    """Why a target cannot run in the chosen mode (None when it can): pretix sells named seats or
    quantities of a product, it has no best-available choice to ask for."""
    if label == PRETIX and args.pick == "best" and not args.skip_onsale:
        return (
            "pretix has no best-available API (its orders name a seat per position), so it "
            "cannot run --pick best; run it with --pick random or adjacent"
        )
    return None


def ticketflow_setup(args: argparse.Namespace) -> dict[str, Any]:
    """How TicketFlow was measured, for the report: started here (with which extra settings), at
    --url (its settings unknown here, the baselines ran beside it), or not at all."""
    if args.url:
        return {"mode": "url", "url": args.url.rstrip("/")}
    if args.no_ticketflow:
        return {"mode": "none"}
    return {"mode": "started", "server_env": {k: _redacted(k, v) for k, v in args.server_env}}


async def _start_pretix(args: argparse.Namespace) -> PretixServer:
    return await start_pretix(
        database_url=args.database_url,
        redis_url=args.pretix_redis_url,
        pretix_dir=args.pretix_dir,
        workers=args.pretix_workers,
        startup_timeout=args.server_startup_timeout,
    )


def pretix_setup(args: argparse.Namespace, server: PretixServer) -> dict[str, Any]:
    """How pretix was run, for the report (docs/performance.md explains each choice)."""
    return {
        "version": server.version,
        "server": f"gunicorn pretix.wsgi, {server.workers} sync workers",
        "database": "own database on --database-url's server",
        "redis": args.pretix_redis_url,
        "tasks": "Celery eager (no broker)",
        "debug": False,
        "orders": "POST .../orders/ with seats, status p, payment_provider manual, no force",
    }


def _redacted(key: str, value: str) -> str:
    secret = any(word in key.upper() for word in ("SECRET", "PASSWORD", "KEY", "TOKEN"))
    return "***" if secret and value else value


async def _start(label: str, args: argparse.Namespace) -> ServiceProcess:
    if label == "ticketflow":
        return await start_ticketflow(
            database_url=args.database_url,
            redis_url=args.redis_url,
            payment_latency_ms=args.payment_latency_ms,
            admin_email=args.admin_email,
            admin_password=args.admin_password,
            server_env=args.server_env,
            startup_timeout=args.server_startup_timeout,
        )
    return await start_plain_service(
        label,
        database_url=args.database_url,
        redis_url=args.redis_url,
        payment_latency_ms=args.payment_latency_ms,
        admin_email=args.admin_email,
        admin_password=args.admin_password,
    )


def _ratio_cell(a: Any, b: Any) -> str:
    if isinstance(a, bool) or isinstance(b, bool):
        return "-"
    if isinstance(a, int | float) and isinstance(b, int | float):
        return fmt_ratio(ratio(float(a), float(b)))
    return "-"


def compare_markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    tf = report.get("ticketflow", {})
    latency_for = {
        "started": "for TicketFlow (started here, its own database) and the baselines",
        "url": "for the baselines (TicketFlow at --url: its own setting; it stayed up while they ran)",
    }.get(tf.get("mode", ""), "for the baselines")
    extra_env = tf.get("server_env") or {}
    parts = [
        "## Comparison\n",
        f"Machine: {m['cpus']} CPUs, {m['platform']}, Python {m['python']}; load average "
        f"{m['loadavg_at_start']} at start, {m.get('loadavg_at_end')} at end. Simulated charge latency "
        f"{report['payment_latency_ms']} ms {latency_for}."
        + (
            " TicketFlow's extra settings: "
            + ", ".join(f"{k}={v}" for k, v in extra_env.items())
            + "."
            if extra_env
            else ""
        )
        + " Ratios: first column / other column.\n",
    ]
    floors = report["floor"]
    if floors:
        first = floors[0]
        rows = [
            [
                f["label"],
                fmt(f["requests_per_s"]),
                fmt(f["latency_ms"]["p50"]),
                fmt(f["latency_ms"]["p99"]),
                fmt(f["errors"]),
                fmt(f["client_cpu_util"], 2),
                _ratio_cell(first["requests_per_s"], f["requests_per_s"])
                if f is not first
                else "-",
            ]
            for f in floors
        ]
        parts.append(
            "### HTTP floor (GET /health)\n\n"
            + markdown_table(
                [
                    "target",
                    "requests/s",
                    "p50 ms",
                    "p99 ms",
                    "errors",
                    "client CPU",
                    f"{first['label']} / target",
                ],
                rows,
            )
            + "\n"
        )
    runs = report["onsale"]
    if runs:
        labels = [r["label"] for r in runs]
        figures = [summary_rows(r) for r in runs]
        header = ["figure", *labels] + [f"{labels[0]} / {other}" for other in labels[1:]]
        rows = []
        for i, (name, _value) in enumerate(figures[0]):
            values = [f[i][1] for f in figures]
            rows.append(
                [name, *(fmt(v) for v in values), *(_ratio_cell(values[0], v) for v in values[1:])]
            )
        p = runs[0]["params"]
        parts.append(
            f"### On-sale, side by side\n\n{p['seats']} seats, {p['buyers']} buyers, up to {p['attempts']} attempts, "
            f"concurrency {p['concurrency']}, {mode_text(p)}, "
            f"{p['retries']} retries; first wave: the first {p['concurrency']} POSTs.\n\n"
            + markdown_table(header, rows)
            + "\n"
        )
        for r in runs:
            extra = []
            if r["results"]["failed"]:
                extra.append(
                    "failed " + ", ".join(f"{k} {v}" for k, v in r["results"]["failed"].items())
                )
            if r["results"]["errors"]:
                extra.append(
                    "errors " + ", ".join(f"{k} {v}" for k, v in r["results"]["errors"].items())
                )
            if extra:
                parts.append(f"- {r['label']}: " + "; ".join(extra))
        parts.append("")
    if report.get("pretix"):
        px = report["pretix"]
        parts.append(
            f"pretix {px['version']}: {px['server']}, {px['tasks']}, DEBUG off; {px['orders']}; "
            "its 202/200 answer is the order POST's answer (pretix confirms synchronously, so "
            "--wait changes nothing for it); its HTTP "
            "floor is GET /healthcheck/ (a database query and a Redis write and read).\n"
        )
    if report["locks"] is not None:
        parts.append(locks_markdown(report["locks"]))
    if report["failures"]:
        parts.append("Failures: " + "; ".join(f"{k}: {v}" for k, v in report["failures"].items()))
    if report.get("skipped"):
        parts.append("Skipped: " + "; ".join(f"{k}: {v}" for k, v in report["skipped"].items()))
    return "\n".join(parts)


def run_compare(args: argparse.Namespace) -> int:
    reports = []
    for n in range(1, args.runs + 1):
        if args.runs > 1:
            log(f"compare: run {n} of {args.runs}")
        reports.append(run_async(_compare(args)))
    output: dict[str, Any] = reports[0]
    if args.runs > 1:
        output = {"benchmark": "compare", "runs": reports, "median": median_summary(reports)}
    if args.json:
        Path(args.json).write_text(json.dumps(output, indent=2) + "\n")
        log(f"results written to {args.json}")
    for n, report in enumerate(reports, 1):
        if args.runs > 1:
            print(f"# Run {n} of {args.runs}\n")
        print(compare_markdown(report))
    if args.runs > 1:
        print(medians_markdown(output["median"]))
    passed = all(r["checks"]["passed"] for report in reports for r in report["onsale"])
    return 0 if passed and not any(report["failures"] for report in reports) else 1
