"""pretix as a `bench compare` target: its database, its configuration, gunicorn, its API token.

`start_pretix` returns a `PretixServer` (the running `ServiceProcess` plus the organiser and API
token the scenario uses). Set-up, none of it timed:

1. pretix's virtual environment (`install.ensure_installed`, first use only);
2. a database `tf_bench_pretix_<hex>` on the Postgres server of `--database-url`, created from a
   template database that `pretix migrate` filled once per pretix version
   (`tf_bench_pretix_tpl_<version>`, kept: the migrations take 2-10 minutes on two cores);
3. `pretix.cfg` in a temporary directory: that database, `--pretix-redis-url` for the cache and
   the sessions (pretix's production guide), no Celery broker (tasks run eagerly, in the request),
   `debug = off`;
4. `bootstrap.py` under pretix's interpreter: an organiser, a team with every permission, its API
   token;
5. gunicorn on a free 127.0.0.1 port as the production guide runs it (`pretix.wsgi`, sync
   workers, `--max-requests 1200 --max-requests-jitter 50`), until `/healthcheck/` answers.

`stop()` ends gunicorn, drops the database, empties pretix's Redis database and removes the
temporary directory.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import httpx

from benchmarks.common import log
from benchmarks.pretix.install import DEFAULT_PRETIX_DIR, PRETIX_VERSION, ensure_installed
from benchmarks.services import ServiceProcess, start_service, with_database
from supervision.ports import free_port

DATABASE_PREFIX = "tf_bench_pretix_"
# A Redis database of pretix's own: its health check writes an unprefixed key, and stop() empties it.
DEFAULT_PRETIX_REDIS_URL = "redis://127.0.0.1:6379/13"
# pretix's manual installation guide: `--workers 5` (2 x cores + 1 on a two-core machine).
DEFAULT_WORKERS = 5
HEALTH_PATH = "/healthcheck/"
STARTUP_TIMEOUT = 180.0
WORKER_TIMEOUT = 120
# gunicorn's graceful stop waits up to --graceful-timeout (30 s) for its workers; seen to exceed 15 s
# at a load average of 30.
STOP_TIMEOUT = 45.0
BOOTSTRAP_SCRIPT = Path(__file__).with_name("bootstrap.py")


@dataclass
class PretixServer:
    """A running pretix and what the scenario needs to drive it."""

    service: ServiceProcess
    organizer: str
    token: str
    version: str = PRETIX_VERSION
    workers: int = DEFAULT_WORKERS

    @property
    def url(self) -> str:
        return self.service.url

    async def stop(self) -> None:
        await self.service.stop()


def template_database_name(version: str = PRETIX_VERSION) -> str:
    return f"{DATABASE_PREFIX}tpl_{version.replace('.', '_')}"


def pretix_config(
    *,
    database_url: str,
    redis_url: str,
    url: str,
    data_dir: Path,
    secret: str,
) -> str:
    """The text of `pretix.cfg` (keys as pretix/settings.py of 2026.8 reads them)."""
    db = urlsplit(database_url)
    return "\n".join(
        [
            "[pretix]",
            "instance_name=TicketFlow benchmark",
            f"url={url}",
            "currency=GBP",
            f"datadir={data_dir}",
            # The ECB exchange-rate download is a periodic task; nothing here needs it.
            "ecb_rates=off",
            "loglevel=WARNING",
            "",
            "[locale]",
            "timezone=UTC",
            "",
            "[database]",
            "backend=postgresql",
            f"name={db.path.lstrip('/')}",
            f"user={db.username or 'postgres'}",
            f"password={db.password or ''}",
            f"host={db.hostname or '127.0.0.1'}",
            f"port={db.port or 5432}",
            "",
            "[mail]",
            "from=tickets@example.com",
            # Orders are created with send_email=false: nothing is sent; an unreachable port makes sure.
            "host=127.0.0.1",
            "port=1",
            "",
            "[redis]",
            f"location={redis_url}",
            "sessions=true",
            "",
            "[django]",
            "debug=off",
            f"secret={secret}",
            "",
        ]
    )


def pretix_env(base: dict[str, str], config_file: Path) -> dict[str, str]:
    """The environment of pretix's processes: none of the shell's PRETIX_* (pretix reads
    `PRETIX_<SECTION>_<KEY>` over its config file), its config file and settings module."""
    env = {k: v for k, v in base.items() if not k.upper().startswith(("PRETIX_", "DJANGO_"))}
    env.pop("PYTHONPATH", None)
    env.update(
        {"PRETIX_CONFIG_FILE": str(config_file), "DJANGO_SETTINGS_MODULE": "pretix.settings"}
    )
    return env


async def _database_exists(admin_url: str, name: str) -> bool:
    conn = await asyncpg.connect(admin_url, timeout=10)
    try:
        return bool(await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name))
    finally:
        await conn.close()


async def _execute(admin_url: str, sql: str) -> None:
    conn = await asyncpg.connect(admin_url, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _run(cmd: list[str], env: dict[str, str], cwd: Path, what: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        *cmd,
        env=env,
        cwd=str(cwd),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    text = out.decode(errors="replace")
    if proc.returncode != 0:
        tail = "\n".join(text.splitlines()[-20:])
        raise RuntimeError(f"pretix: {what} failed with {proc.returncode}:\n{tail}")
    return text


async def ensure_template(python: Path, database_url: str, work_dir: Path) -> str:
    """The migrated template database of this pretix version, made on first use.

    It is migrated under a temporary name and renamed when complete, so an interrupted migration
    never leaves a template that looks finished."""
    name = template_database_name()
    if await _database_exists(database_url, name):
        return name
    building = f"{name}_building_{secrets.token_hex(3)}"
    await _execute(database_url, f'CREATE DATABASE "{building}"')
    try:
        config = work_dir / "migrate.cfg"
        config.write_text(
            pretix_config(
                database_url=with_database(database_url, building),
                redis_url=DEFAULT_PRETIX_REDIS_URL,
                url="http://127.0.0.1",
                data_dir=work_dir / "data",
                secret=secrets.token_urlsafe(40),
            )
        )
        (work_dir / "data").mkdir(exist_ok=True)
        log(
            f"pretix: migrating template database {name} (once per pretix version; minutes on two cores)"
        )
        await _run(
            [str(python), "-m", "pretix", "migrate", "--noinput"],
            pretix_env(dict(os.environ), config),
            work_dir,
            "migrate",
        )
        await _execute(database_url, f'ALTER DATABASE "{building}" RENAME TO "{name}"')
    except BaseException:
        await _execute(database_url, f'DROP DATABASE IF EXISTS "{building}" WITH (FORCE)')
        raise
    return name


async def _flush_redis(url: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.from_url(url)
    try:
        await client.flushdb()
    finally:
        await client.aclose()  # type: ignore[attr-defined]


async def start_pretix(
    *,
    database_url: str,
    redis_url: str = DEFAULT_PRETIX_REDIS_URL,
    pretix_dir: Path = DEFAULT_PRETIX_DIR,
    workers: int = DEFAULT_WORKERS,
    startup_timeout: float = STARTUP_TIMEOUT,
) -> PretixServer:
    """Installs (first use), configures and starts pretix; see the module docstring."""
    python = await asyncio.to_thread(ensure_installed, pretix_dir)
    run_dir = Path(tempfile.mkdtemp(prefix="tf-bench-pretix-"))
    db_name = f"{DATABASE_PREFIX}{secrets.token_hex(4)}"
    created = False

    async def drop_database() -> None:
        if created:
            await _execute(database_url, f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')

    async def flush_redis() -> None:
        await _flush_redis(redis_url)

    async def remove_run_dir() -> None:
        shutil.rmtree(run_dir, ignore_errors=True)

    cleanups = [drop_database, flush_redis, remove_run_dir]
    try:
        template = await ensure_template(python, database_url, run_dir)
        await _execute(database_url, f'CREATE DATABASE "{db_name}" TEMPLATE "{template}"')
        created = True
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        (run_dir / "data").mkdir(exist_ok=True)
        config = run_dir / "pretix.cfg"
        config.write_text(
            pretix_config(
                database_url=with_database(database_url, db_name),
                redis_url=redis_url,
                url=url,
                data_dir=run_dir / "data",
                secret=secrets.token_urlsafe(40),
            )
        )
        env = pretix_env(dict(os.environ), config)
        organizer = f"bench{secrets.token_hex(3)}"
        out = await _run(
            [str(python), str(BOOTSTRAP_SCRIPT), organizer],
            env,
            run_dir,
            "bootstrap (organiser, token)",
        )
        credentials = json.loads(out.strip().splitlines()[-1])
        gunicorn = python.parent / "gunicorn"
        cmd = [
            str(gunicorn),
            "pretix.wsgi",
            "--name",
            "pretix",
            "--workers",
            str(workers),
            "--max-requests",
            "1200",
            "--max-requests-jitter",
            "50",
            "--log-level",
            "warning",
            # gunicorn's default of 30 s killed every worker at start on a loaded two-core machine:
            # each worker's first request imports pretix's whole URL configuration.
            "--timeout",
            str(WORKER_TIMEOUT),
            "--bind",
            f"127.0.0.1:{port}",
        ]
        log(f"pretix: database {db_name}, {workers} gunicorn workers on port {port}")
    except BaseException:
        for cleanup in cleanups:
            await cleanup()
        raise
    service = await start_service(
        "pretix",
        cmd,
        env=env,
        url=url,
        startup_timeout=startup_timeout,
        health_path=HEALTH_PATH,
        cwd=run_dir,
        cleanups=cleanups,
        stop_timeout=STOP_TIMEOUT,
    )
    try:
        await warm_up(url, workers)
    except BaseException:
        await service.stop()
        raise
    return PretixServer(
        service,
        organizer=str(credentials["organizer"]),
        token=str(credentials["token"]),
        workers=workers,
    )


async def warm_up(url: str, workers: int, rounds: int = 3) -> None:
    """Concurrent health checks until every worker has answered once (imported the URL
    configuration), so that no booking waits for a worker's first import."""
    async with httpx.AsyncClient(timeout=WORKER_TIMEOUT) as client:
        for _ in range(rounds):
            answers = await asyncio.gather(
                *(client.get(url + HEALTH_PATH) for _ in range(workers * 4)),
                return_exceptions=True,
            )
            bad = [a for a in answers if not isinstance(a, httpx.Response) or a.status_code != 200]
            if bad:
                raise RuntimeError(
                    f"pretix: {len(bad)} of {len(answers)} warm-up health checks failed: {bad[0]}"
                )


def installed_here(pretix_dir: Path = DEFAULT_PRETIX_DIR) -> bool:
    """Whether pretix's environment exists (without installing it)."""
    python = pretix_dir / "venv" / "bin" / "python"
    return (
        python.exists()
        and subprocess.run(
            [str(python), "-c", "import pretix"],
            capture_output=True,
            check=False,
        ).returncode
        == 0
    )
