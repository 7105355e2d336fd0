"""Shared fixtures: one database, one Ray, one Serve app, one SMTP sink per test session.

With DATABASE_URL / REDIS_URL set (CI on this machine type) the suite uses those servers, in a
fresh database of its own; without them it starts the embedded Postgres and Redis.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio

from config.secrets import secret_env_names
from tests import boot
from tests.fakes.smtp_server import SmtpSink
from tests.fakes.stripe_api import FakeStripe
from tests.helpers import ADMIN, CORS_ORIGIN, login, new_user

# Every charge takes this long at the (fake) Stripe API, so tests can catch a saga mid-charge.
STRIPE_LATENCY_SECONDS = 0.3


@pytest.fixture(scope="session")
def state_dir() -> Path:
    return boot.make_state_dir("tf-test-")


@pytest.fixture(scope="session")
def embedded() -> dict[str, Any]:
    """The embedded servers this session started (fault tests stop and restart them)."""
    return {}


@pytest.fixture(scope="session")
def database_url(state_dir: Path, embedded: dict[str, Any]) -> Iterator[str]:
    with boot.postgres_url(state_dir, "tf_test", embedded) as url:
        yield url


@pytest.fixture(scope="session")
def redis_url(state_dir: Path, embedded: dict[str, Any]) -> Iterator[str]:
    with boot.redis_url(state_dir, embedded) as url:
        yield url


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
def app_env(
    database_url: str, redis_url: str, smtp_sink: SmtpSink, stripe_api: FakeStripe, state_dir: Path
) -> dict[str, str]:
    return boot.app_env(
        database_url=database_url,
        redis_url=redis_url,
        state_dir=state_dir,
        SMTP_URL=smtp_sink.url,
        STRIPE_API_KEY=stripe_api.api_key,
        STRIPE_API_BASE=stripe_api.url,
        TICKETFLOW_PAYMENT_TIMEOUT_SECONDS="3",
        TICKETFLOW_PAYMENT_RECONCILE_INTERVAL_SECONDS="1",
        TICKETFLOW_SAGA_TIMEOUT_SECONDS="15",
        # Login per account stays low so that the 429 path is exercised (tests/e2e/test_security.py).
        TICKETFLOW_RATE_LIMIT_LOGIN_PER_EMAIL_PER_MINUTE="5",
        TICKETFLOW_SEAT_ACTOR_IDLE_SECONDS="6",
        # A small cap, so that the whole suite runs with idle seat actors being retired for new ones.
        TICKETFLOW_SEAT_ACTORS_PER_NODE="4",
        # Sales opening: warmed 20 s ahead, kept warm 20 s after (not half an hour, which would
        # pin the few slots above to the waiting-room tests' events); looked for every second.
        TICKETFLOW_SEAT_ACTOR_WARM_INTERVAL_SECONDS="1",
        TICKETFLOW_SEAT_ACTOR_WARM_LEAD_SECONDS="20",
        TICKETFLOW_SEAT_ACTOR_HOT_SECONDS="20",
        TICKETFLOW_NOTIFY_RETRY_MAX_SECONDS="2",
        TICKETFLOW_NOTIFY_MAX_ATTEMPTS="100",
        # One browser origin may call the API; every other origin gets no CORS header.
        TICKETFLOW_CORS_ORIGINS=CORS_ORIGIN,
    )


@pytest.fixture(scope="session")
def server(app_env: dict[str, str]) -> Iterator[str]:  # noqa: ARG001 - app_env must be set first
    """The real Serve app on a free port, backed by a real local Ray."""
    import ray

    from actors import names
    from cli import ray_env
    from config.settings import get_settings

    def start_ray() -> None:
        os.environ.update(ray_env.ingress_env(get_settings()))
        # As `ticketflow serve` does: the workers inherit the secrets from this process's environment
        # (app_env set it before Ray starts) or read the 0600 secrets file; the runtime_env, which
        # Ray logs and shows, carries none (issue 17).
        env_vars = ray_env.runtime_env_vars()
        assert not set(env_vars) & secret_env_names(), "a secret would travel in Ray's runtime_env"
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            logging_level="ERROR",
            namespace=names.NAMESPACE,
            runtime_env={"env_vars": env_vars},
            logging_config=ray.LoggingConfig(encoding="JSON", log_level="INFO"),
        )

    with boot.serve_app_on_ray(start_ray, logging_config={"log_level": "WARNING"}) as url:
        yield url


@pytest_asyncio.fixture(scope="session")
async def http(server: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server, timeout=30.0) as client:
        yield client


@pytest_asyncio.fixture(scope="session")
async def db(app_env: dict[str, str], server: str) -> AsyncIterator[asyncpg.Pool]:  # noqa: ARG001 - migrated by server
    pool = await asyncpg.create_pool(app_env["DATABASE_URL"], min_size=1, max_size=4)
    yield pool
    await pool.close()


@pytest_asyncio.fixture(scope="session")
async def admin_token(http: httpx.AsyncClient) -> str:
    return await login(http, *ADMIN)


@pytest_asyncio.fixture
async def user_token(http: httpx.AsyncClient) -> str:
    return (await new_user(http))[0]
