"""`ticketflow bench ...`: the on-sale benchmark, the lock engines, and the side-by-side comparison.

    python -m benchmarks.cli onsale  --url http://127.0.0.1:3000 [--seats 2000 --attempts 6000 ...]
    python -m benchmarks.cli locks   [--lock-seats 100000,1000,50 --lock-seconds 3 ...]
    python -m benchmarks.cli compare [--payment-latency-ms 5 ...]   (starts its own TicketFlow server)

Results go to stdout as markdown (and to `--json PATH` as JSON); progress and phase messages go to
stderr. `main(argv)` is what `ticketflow bench` calls.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from benchmarks.common import log, run_async
from benchmarks.onsale import OnsaleConfig, SetupError, report_markdown, run_onsale
from benchmarks.options import (
    add_lock_options,
    add_onsale_options,
    add_pretix_options,
    add_queue_options,
    onsale_config,
    positive_int,
    server_env_option,
)


def _write_json(path: str | None, data: Any) -> None:
    if path:
        Path(path).write_text(json.dumps(data, indent=2) + "\n")
        log(f"results written to {path}")


def cmd_onsale(args: argparse.Namespace) -> int:
    config = onsale_config(args, args.url)
    if args.queue:
        return cmd_onsale_queue(args, config)
    try:
        report = run_async(run_onsale(config))
    except SetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _write_json(args.json, report)
    print(report_markdown(report))
    return 0 if report["checks"]["passed"] else 1


def cmd_onsale_queue(args: argparse.Namespace, config: OnsaleConfig) -> int:
    from benchmarks.queue import QueueConfig, run_queue_onsale
    from benchmarks.queue_report import passed, queue_markdown

    queue = QueueConfig(
        buyers=args.queue,
        admit_per_minute=args.admit_per_minute,
        baseline_concurrency=args.baseline_concurrency,
        baseline=not args.no_baseline,
        tell_seconds=args.tell_seconds,
    )
    try:
        report = run_async(run_queue_onsale(config, queue))
    except SetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _write_json(args.json, report)
    print(queue_markdown(report))
    return 0 if passed(report) else 1


def cmd_locks(args: argparse.Namespace) -> int:
    from benchmarks.locks import LockBenchConfig, locks_markdown, run_lock_bench

    report = run_async(run_lock_bench(LockBenchConfig.from_args(args)))
    _write_json(args.json, report)
    print(locks_markdown(report))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from benchmarks.compare import run_compare

    return run_compare(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ticketflow bench",
        description="TicketFlow benchmarks: the on-sale spike and its baselines",
    )
    sub = parser.add_subparsers(dest="bench", required=True)

    onsale = sub.add_parser(
        "onsale",
        help="the on-sale spike against a running server",
        description="Create an event, release buyers at once, report speed and correctness.",
    )
    add_onsale_options(onsale, url_required=True)
    add_queue_options(onsale)
    onsale.add_argument("--json", metavar="PATH", help="also write the report as JSON to PATH")
    onsale.set_defaults(func=cmd_onsale)

    locks = sub.add_parser(
        "locks",
        help="seat-lock engines alone: Ray actor (with/without coalescing), Redis Lua, Postgres",
        description="Locks per second at several contention levels, no HTTP.",
    )
    add_lock_options(locks)
    locks.add_argument("--json", metavar="PATH", help="also write the report as JSON to PATH")
    locks.set_defaults(func=cmd_locks)

    compare = sub.add_parser(
        "compare",
        help="TicketFlow and the usual designs in one run, side by side with ratios",
        description="The HTTP floor, the lock engines, and the on-sale scenario against TicketFlow and the "
        "plain FastAPI + asyncpg baselines (Postgres row lock, Redis Lua lock). Without --url, "
        "TicketFlow is started here too (`ticketflow serve` on a scratch database); each target "
        "runs on a free 127.0.0.1 port, one at a time, stopped before the next starts.",
    )
    add_onsale_options(
        compare,
        url_required=False,
        url_help="measure this already running TicketFlow server instead of starting one; it stays up (and "
        "holds Postgres connections and CPU) while the baselines run, so prefer leaving --url out",
    )
    add_lock_options(compare)
    g = compare.add_argument_group("comparison")
    g.add_argument(
        "--baselines",
        default="plain-pg,plain-redis",
        help="baseline services to run, comma-separated from plain-pg, plain-redis, pretix (the "
        "open-source ticket shop, installed on first use into --pretix-dir), or 'none' "
        "(default: %(default)s)",
    )
    g.add_argument(
        "--no-ticketflow",
        action="store_true",
        help="measure only the baselines (no TicketFlow server, neither started nor --url)",
    )
    g.add_argument(
        "--payment-latency-ms",
        type=int,
        default=0,
        help="simulated charge latency of the baselines and of the TicketFlow server started here; "
        "with --url set it to that server's TICKETFLOW_PAYMENT_LATENCY_MS (default: %(default)s)",
    )
    g.add_argument(
        "--server-env",
        metavar="KEY=VALUE",
        type=server_env_option,
        action="append",
        default=[],
        help="extra environment of the TicketFlow server started here, e.g. "
        "TICKETFLOW_SAGA_POOL_SIZE=4 (repeatable; overrides the benchmark's settings except "
        "the ones other options own)",
    )
    g.add_argument(
        "--server-startup-timeout",
        type=float,
        default=180.0,
        help="seconds the TicketFlow server started here may take to answer /health "
        "(default: %(default)s)",
    )
    g.add_argument(
        "--floor-seconds",
        type=float,
        default=5.0,
        help="seconds of GET /health per target for the HTTP floor (0 skips it) (default: %(default)s)",
    )
    g.add_argument("--skip-locks", action="store_true", help="skip the lock-engine comparison")
    g.add_argument(
        "--skip-onsale", action="store_true", help="skip the on-sale runs (floor and locks only)"
    )
    g.add_argument(
        "--runs",
        type=positive_int,
        default=1,
        help="repeat the whole comparison this many times and add the medians (with ranges) of "
        "every figure; the JSON then holds every run and the medians (default: %(default)s)",
    )
    g.add_argument("--json", metavar="PATH", help="also write every report as JSON to PATH")
    add_pretix_options(compare)
    compare.set_defaults(func=cmd_compare)
    return parser


def compare_args_problem(args: argparse.Namespace) -> str | None:
    """What is contradictory in `compare`'s options (argparse checks each alone)."""
    if args.url and args.no_ticketflow:
        return "--url and --no-ticketflow exclude each other"
    if args.server_env and (args.url or args.no_ticketflow):
        return (
            "--server-env configures the TicketFlow server compare starts; it has no effect with "
            + ("--url" if args.url else "--no-ticketflow")
        )
    return None


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.bench == "compare" and (problem := compare_args_problem(args)):
        parser.error(problem)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
