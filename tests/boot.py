"""How a test session boots TicketFlow: one place for tests/conftest.py (one local Ray) and
tests/cluster/conftest.py (a three-node cluster).

Postgres and Redis are the servers DATABASE_URL / REDIS_URL name (a scratch database of our own
on that Postgres), else embedded ones in the session's state directory. The app's environment is
set in this process before Ray starts, so Ray's processes inherit it. Then migrations, Ray (the
caller's way), Serve with the app, the service actors, and a wait until /health answers.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.databases import scratch_database
from tests.helpers import ADMIN
from tests.waiting import wait_until_sync


def make_state_dir(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)  # the embedded Postgres runs as an unprivileged user when we are root
    return path


@contextmanager
def postgres_url(state_dir: Path, scratch_prefix: str, started: dict[str, Any]) -> Iterator[str]:
    """A fresh database on DATABASE_URL's server, else an embedded Postgres kept in
    `started["postgres"]`; whatever is there at the end is stopped (a fault test may have
    replaced it with a restarted one)."""
    base = os.environ.get("DATABASE_URL")
    if base:
        with scratch_database(base, scratch_prefix) as url:
            yield url
        return
    from supervision.postgres import start_embedded_postgres

    started["postgres"] = start_embedded_postgres(state_dir)
    try:
        yield started["postgres"].url
    finally:
        started["postgres"].stop()


@contextmanager
def redis_url(state_dir: Path, started: dict[str, Any]) -> Iterator[str]:
    """REDIS_URL, else an embedded Redis kept in `started["redis"]` (stopped at the end, as above)."""
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    from supervision.redis import start_embedded_redis

    started["redis"] = start_embedded_redis(state_dir)
    try:
        yield started["redis"].url
    finally:
        started["redis"].stop()


def app_env(
    *, database_url: str, redis_url: str, state_dir: Path, **overrides: str
) -> dict[str, str]:
    """The settings both sessions share (their own come as overrides), set in this process."""
    from supervision.ports import free_port

    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "JWT_SECRET": secrets.token_urlsafe(48),
        "TICKETFLOW_STATE_DIR": str(state_dir),
        "TICKETFLOW_PORT": str(free_port()),
        "TICKETFLOW_SEED_DEMO": "false",
        "TICKETFLOW_ADMIN_EMAIL": ADMIN[0],
        "TICKETFLOW_ADMIN_PASSWORD": ADMIN[1],
        # Cheap hashing in tests only: production uses argon2id at OWASP's minimum.
        "TICKETFLOW_PASSWORD_HASH_MEMORY_KIB": "64",
        "TICKETFLOW_PASSWORD_HASH_TIME_COST": "1",
        # Limits high enough for the tests' many users from one address.
        "TICKETFLOW_AUTH_USER_CACHE_SECONDS": "0",
        "TICKETFLOW_RATE_LIMIT_IP_PER_MINUTE": "100000",
        "TICKETFLOW_RATE_LIMIT_USER_PER_MINUTE": "100000",
        "TICKETFLOW_RATE_LIMIT_AUTH_PER_MINUTE": "100000",
        # A saga cut short is resumed quickly.
        "TICKETFLOW_SAGA_STALE_AFTER_SECONDS": "3",
        "TICKETFLOW_SAGA_RECOVERY_INTERVAL_SECONDS": "1",
        "TICKETFLOW_SAGA_STEP_TIMEOUT_SECONDS": "5",
        "TICKETFLOW_NOTIFY_POLL_SECONDS": "0.5",
        "TICKETFLOW_NOTIFY_RETRY_BASE_SECONDS": "0.5",
        "RAY_USAGE_STATS_ENABLED": "0",
        **overrides,
    }
    os.environ.update(env)
    from config.settings import get_settings

    get_settings.cache_clear()
    return env


@contextmanager
def serve_app_on_ray(
    start_ray: Callable[[], None], *, app: Any = None, **serve_options: Any
) -> Iterator[str]:
    """Migrates, calls `start_ray`, runs the app (default: `serve_app.app`) on Serve with the
    service actors, waits for /health, yields the app's URL; shuts Ray down at the end."""
    import ray
    from ray import serve

    import serve_app
    from actors.saga_client import start_service_actors
    from cli import databases, ray_env
    from config.settings import get_settings

    settings = get_settings()
    asyncio.run(databases.prepare_database(settings, seed=False))
    os.environ["RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"] = ray_env.PROXY_CALLBACK
    try:
        start_ray()
        serve.start(http_options={"host": "127.0.0.1", "port": settings.port}, **serve_options)
        serve_app.deploy(app)
        start_service_actors()
        url = f"http://127.0.0.1:{settings.port}"
        # The route table reaches the proxy a moment after serve.run returns.
        wait_until_sync(
            lambda: httpx.get(f"{url}/health", timeout=5).status_code,
            until=lambda status: status == 200,
            timeout=60,
            what=f"the Serve app to answer {url}/health with 200",
            ignoring=(httpx.TransportError,),
        )
        yield url
    finally:
        ray.shutdown()
