"""Shared fixtures: one database, one Ray, one Serve app, one SMTP sink per test session.

With DATABASE_URL / REDIS_URL set (CI on this machine type) the suite uses those servers, in a
fresh database of its own; without them it starts the embedded Postgres and Redis.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio

from config.secrets import secret_env_names
from storage.embedded import free_port
from tests.databases import scratch_database
from tests.fakes.smtp_server import SmtpSink
from tests.fakes.stripe_api import FakeStripe
from tests.helpers import ADMIN, CORS_ORIGIN, login, new_user

# Every charge takes this long at the (fake) Stripe API, so tests can catch a saga mid-charge.
STRIPE_LATENCY_SECONDS = 0.3




@pytest.fixture(scope="session")
def state_dir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="tf-test-"))
    path.chmod(0o755)  # the embedded Postgres runs as an unprivileged user when we are root
    return path


@pytest.fixture(scope="session")
def embedded() -> dict[str, Any]:
    """The embedded servers this session started (fault tests stop and restart them)."""
    return {}


@pytest.fixture(scope="session")
def database_url(state_dir: Path, embedded: dict[str, Any]) -> Iterator[str]:
    base = os.environ.get("DATABASE_URL")
    if not base:
        from storage.embedded import start_embedded_postgres

        embedded["postgres"] = start_embedded_postgres(state_dir)
        yield embedded["postgres"].url
        embedded["postgres"].stop()
        return
    with scratch_database(base, "tf_test") as url:
        yield url


@pytest.fixture(scope="session")
def redis_url(state_dir: Path, embedded: dict[str, Any]) -> Iterator[str]:
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    from storage.embedded import start_embedded_redis

    embedded["redis"] = start_embedded_redis(state_dir)
    yield embedded["redis"].url
    embedded["redis"].stop()


@pytest.fixture(scope="session")
def smtp_sink() -> Iterator[SmtpSink]:
    sink = SmtpSink()
    sink.start()
    yield sink
    sink.stop()


@pytest.fixture(scope="session")
def stripe_api() -> Iterator[FakeStripe]:
    """A local server that answers like the Stripe API: the one edge the tests cannot reach."""
    fake = FakeStripe()
    fake.start()
    fake.delay(STRIPE_LATENCY_SECONDS)
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def app_env(database_url: str, redis_url: str, smtp_sink: SmtpSink, stripe_api: FakeStripe, state_dir: Path) -> dict[str, str]:
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "JWT_SECRET": secrets.token_urlsafe(48),
        "SMTP_URL": smtp_sink.url,
        "TICKETFLOW_STATE_DIR": str(state_dir),
        "TICKETFLOW_PORT": str(free_port()),
        "TICKETFLOW_SEED_DEMO": "false",
        "TICKETFLOW_ADMIN_EMAIL": ADMIN[0],
        "TICKETFLOW_ADMIN_PASSWORD": ADMIN[1],
        # Cheap hashing in tests only: production uses argon2id at OWASP's minimum.
        "TICKETFLOW_PASSWORD_HASH_MEMORY_KIB": "64",
        "TICKETFLOW_PASSWORD_HASH_TIME_COST": "1",
        "STRIPE_API_KEY": stripe_api.api_key,
        "STRIPE_API_BASE": stripe_api.url,
        "TICKETFLOW_PAYMENT_TIMEOUT_SECONDS": "3",
        "TICKETFLOW_PAYMENT_RECONCILE_INTERVAL_SECONDS": "1",
        "TICKETFLOW_SAGA_TIMEOUT_SECONDS": "15",
        "TICKETFLOW_SAGA_STEP_TIMEOUT_SECONDS": "5",
        # Limits high enough for the suite's many users from one address; login per account
        # stays low so that the 429 path is exercised (tests/e2e/test_security.py).
        "TICKETFLOW_AUTH_USER_CACHE_SECONDS": "0",
        "TICKETFLOW_RATE_LIMIT_IP_PER_MINUTE": "100000",
        "TICKETFLOW_RATE_LIMIT_USER_PER_MINUTE": "100000",
        "TICKETFLOW_RATE_LIMIT_AUTH_PER_MINUTE": "100000",
        "TICKETFLOW_RATE_LIMIT_LOGIN_PER_EMAIL_PER_MINUTE": "5",
        "TICKETFLOW_SEAT_ACTOR_IDLE_SECONDS": "6",
        # A small cap, so that the whole suite runs with idle seat actors being retired for new ones.
        "TICKETFLOW_SEAT_ACTORS_PER_NODE": "4",
        "TICKETFLOW_SAGA_STALE_AFTER_SECONDS": "3",
        "TICKETFLOW_SAGA_RECOVERY_INTERVAL_SECONDS": "1",
        "TICKETFLOW_NOTIFY_POLL_SECONDS": "0.5",
        "TICKETFLOW_NOTIFY_RETRY_BASE_SECONDS": "0.5",
        "TICKETFLOW_NOTIFY_RETRY_MAX_SECONDS": "2",
        "TICKETFLOW_NOTIFY_MAX_ATTEMPTS": "100",
        "RAY_USAGE_STATS_ENABLED": "0",
        # One browser origin may call the API; every other origin gets no CORS header.
        "TICKETFLOW_CORS_ORIGINS": CORS_ORIGIN,
    }
    os.environ.update(env)
    from config.settings import get_settings

    get_settings.cache_clear()
    return env


@pytest.fixture(scope="session")
def server(app_env: dict[str, str]) -> Iterator[str]:  # noqa: ARG001 - app_env must be set first
    """The real Serve app on a free port, backed by a real local Ray."""
    import ray
    from ray import serve

    import serve_app
    from actors.names import NAMESPACE
    from actors.saga_client import start_service_actors
    from config.settings import get_settings

    settings = get_settings()
    asyncio.run(serve_app.prepare_database(settings, seed=False))
    os.environ["RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"] = serve_app.PROXY_CALLBACK
    os.environ.update(serve_app.ingress_env(settings))
    # As `ticketflow serve` does: the workers inherit the secrets from this process's environment
    # (app_env set it before Ray starts) or read the 0600 secrets file; the runtime_env, which
    # Ray logs and shows, carries none (issue 17).
    env_vars = serve_app.runtime_env_vars()
    assert not set(env_vars) & secret_env_names(), "a secret would travel in Ray's runtime_env"
    ray.init(
        address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
        namespace=NAMESPACE, runtime_env={"env_vars": env_vars},
        logging_config=ray.LoggingConfig(encoding="JSON", log_level="INFO"),
    )
    serve.start(http_options={"host": "127.0.0.1", "port": settings.port}, logging_config={"log_level": "WARNING"})
    serve.run(serve_app.app, name="ticketflow", route_prefix="/")
    start_service_actors()
    yield f"http://127.0.0.1:{settings.port}"
    ray.shutdown()


@pytest_asyncio.fixture(scope="session")
async def http(server: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server, timeout=30.0) as client:
        yield client


@pytest_asyncio.fixture(scope="session")
async def db(app_env: dict[str, str], server: str) -> AsyncIterator[asyncpg.Pool]:  # noqa: ARG001 - migrated by server
    pool = await asyncpg.create_pool(app_env["DATABASE_URL"], min_size=1, max_size=4)
    assert pool is not None
    yield pool
    await pool.close()


@pytest_asyncio.fixture(scope="session")
async def admin_token(http: httpx.AsyncClient) -> str:
    return await login(http, *ADMIN)


@pytest_asyncio.fixture
async def user_token(http: httpx.AsyncClient) -> str:
    return (await new_user(http))[0]
