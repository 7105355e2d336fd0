"""TicketFlow started from any checkout, for before/after measurements in one sitting.

`bench compare` starts the server of this checkout (`benchmarks.services.start_ticketflow`);
`benchmarks.cpu_profile --server-root DIR` starts another one's (say `git archive <commit>`
unpacked in a directory) the same way: a scratch database, the benchmark's settings, every
process marked so that it can be found and stopped.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
import tempfile
from pathlib import Path

import asyncpg

from benchmarks.common import log
from benchmarks.services import (
    APP_DATABASE_PREFIX,
    PROJECT_ROOT,
    ServiceProcess,
    start_service,
    ticketflow_server_env,
    with_database,
)
from supervision.ports import free_port


async def start_server(
    *,
    root: Path,
    database_url: str,
    redis_url: str,
    payment_latency_ms: int,
    admin_email: str,
    admin_password: str,
    server_env: list[tuple[str, str]],
) -> tuple[ServiceProcess, str]:
    """`ticketflow serve` from checkout `root` on a scratch database, as `bench compare` starts it
    (`benchmarks.services.start_ticketflow`), but from any checkout; returns it and the database's name."""
    db_name = f"{APP_DATABASE_PREFIX}{secrets.token_hex(4)}"
    state_dir = Path(tempfile.mkdtemp(prefix="tf-cpu-profile-"))

    async def execute(sql: str) -> None:
        conn = await asyncpg.connect(database_url, timeout=10)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async def drop_database() -> None:
        await execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')

    async def remove_state_dir() -> None:
        shutil.rmtree(state_dir, ignore_errors=True)

    port = free_port()
    env = ticketflow_server_env(
        os.environ,
        database_url=with_database(database_url, db_name),
        redis_url=redis_url,
        port=port,
        state_dir=state_dir,
        payment_latency_ms=payment_latency_ms,
        admin_email=admin_email,
        admin_password=admin_password,
        overrides=server_env,
    )
    # The server's code is the checkout's, whatever this interpreter's own installation points at.
    env["PYTHONPATH"] = os.pathsep.join(
        p
        for p in [str(root)] + env.get("PYTHONPATH", "").split(os.pathsep)
        if p and p != str(PROJECT_ROOT)
    )
    await execute(f'CREATE DATABASE "{db_name}"')
    log(f"cpu_profile: ticketflow from {root}, database {db_name}, port {port}")
    service = await start_service(
        "ticketflow",
        [sys.executable, "-m", "cli", "serve"],
        env=env,
        url=f"http://127.0.0.1:{port}",
        startup_timeout=180.0,
        settle_seconds=3.0,
        stop_timeout=90.0,
        cleanups=[drop_database, remove_state_dir],
        cwd=root,
    )
    return service, db_name
