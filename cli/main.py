"""The `ticketflow` command line: arguments, and the short commands (`migrate`, `create-admin`,
`seed-demo`); `serve` is cli/serve.py, `bench` the benchmarks' own command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Any

from cli.databases import database_for_command
from cli.serve import cmd_serve
from config.settings import Settings, get_settings
from supervision.state_dir import StateDirBusy


def cmd_migrate(_args: argparse.Namespace) -> int:
    from storage.migrate import migrate

    with database_for_command(get_settings(), "migrate") as resolved:
        assert resolved.database_url
        applied = asyncio.run(migrate(resolved.database_url))
    print("applied: " + (", ".join(applied) if applied else "nothing (up to date)"))
    return 0


async def _with_conn(settings: Settings, action: Any) -> None:
    import asyncpg

    from storage.migrate import apply_migrations

    assert settings.database_url
    conn = await asyncpg.connect(settings.database_url)
    try:
        await apply_migrations(conn)
        await action(conn, settings)
    finally:
        await conn.close()


def _run_with_db(command: str, action: Any) -> None:
    with database_for_command(get_settings(), command) as resolved:
        asyncio.run(_with_conn(resolved, action))


def cmd_create_admin(args: argparse.Namespace) -> int:
    from api.bootstrap import create_admin

    created: list[bool] = []

    async def action(conn: Any, settings: Settings) -> None:
        created.append(
            await create_admin(
                conn, settings, email=args.email, password=args.password, name=args.name
            )
        )

    try:
        _run_with_db("create-admin", action)
    except (
        ValueError
    ) as exc:  # AdminEmailTaken too: an existing non-admin account is never taken over
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"admin {args.email} created"
        if created[0]
        else f"admin {args.email} already exists (password unchanged)"
    )
    return 0


def cmd_seed_demo(_args: argparse.Namespace) -> int:
    from api.bootstrap import seed_demo

    result: list[bool] = []

    async def action(conn: Any, settings: Settings) -> None:
        result.append(await seed_demo(conn, settings))

    _run_with_db("seed-demo", action)
    print("demo data seeded" if result and result[0] else "demo data already present")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:
        # The benchmark has its own options; `ticketflow bench --help` lists them.
        from benchmarks.cli import main as bench_main

        return bench_main(argv[1:])
    parser = argparse.ArgumentParser(
        prog="ticketflow", description="TicketFlow event-ticketing server"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "serve", help="run the API on TICKETFLOW_HOST:TICKETFLOW_PORT (foreground)"
    ).set_defaults(func=cmd_serve)
    sub.add_parser("migrate", help="apply database migrations").set_defaults(func=cmd_migrate)
    admin = sub.add_parser(
        "create-admin", help="create an ADMIN account (never promotes an existing one)"
    )
    admin.add_argument("--email", required=True)
    admin.add_argument("--password", required=True)
    admin.add_argument("--name", default="Administrator")
    admin.set_defaults(func=cmd_create_admin)
    sub.add_parser("seed-demo", help="seed the demo user, venues and events").set_defaults(
        func=cmd_seed_demo
    )
    sub.add_parser("bench", help="benchmarks: `ticketflow bench onsale|locks|compare --help`")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=get_settings().log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        result: int = args.func(args)
    except StateDirBusy as busy:
        # A short command found the state directory taken and no server's database to use.
        print(f"ticketflow {args.command}: {busy}", file=sys.stderr)
        return 1
    return result
