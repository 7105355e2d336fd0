"""A three-node Ray cluster on this machine, with the real app on it, for the multi-node tests.

These tests need a pytest session of their own: the rest of the suite starts one local Ray for
its whole session (tests/conftest.py `server`), and one process cannot hold two Ray clusters.
Run them with

    python -m pytest -m cluster tests/cluster

A session that also collects other tests skips them (with that command as the reason).

The environment mirrors tests/conftest.py's `app_env`: a fresh database on the server
DATABASE_URL names (else an embedded Postgres), REDIS_URL (else an embedded Redis), both reached
through a role/user with a password, a random JWT secret, cheap password hashing; then
migrations, `Cluster(head + 2 workers)` (dashboard on the head), Serve and the service actors.
Emails go to the outbox (no SMTP), cards to the simulated processor.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio

from storage.embedded import free_port
from tests.databases import scratch_database
from tests.helpers import ADMIN

CLUSTER_MARK = "cluster"
RUN_ALONE = "multi-node Ray tests need their own session: python -m pytest -m cluster tests/cluster"
HEAD_RESOURCE = "tf_head"
# Long enough that bookings caught charging when a node is removed are still charging once it is
# gone (removal takes a few hundred ms; a saga's other steps take a few ms).
PAYMENT_LATENCY_MS = 1500
# Node failure noticed in ~1.5 s instead of ~30 s (defaults: a check every 3 s, 5 misses, 10 s
# timeout), so a lost node's actors restart elsewhere within seconds.
FAST_FAILURE_DETECTION = {
    "health_check_initial_delay_ms": 1000,
    "health_check_period_ms": 500,
    "health_check_timeout_ms": 1000,
    "health_check_failure_threshold": 3,
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{CLUSTER_MARK}: multi-node Ray cluster tests ({RUN_ALONE})")


@pytest.hookimpl(trylast=True)  # after `-m` has deselected what it deselects
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:  # noqa: ARG001
    cluster_items = [i for i in items if i.get_closest_marker(CLUSTER_MARK)]
    if cluster_items and len(cluster_items) < len(items):
        for item in cluster_items:
            item.add_marker(pytest.mark.skip(reason=RUN_ALONE))


@pytest.fixture(scope="session")
def cluster_state_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="tf-cluster-"))
    path.chmod(0o755)  # the embedded Postgres runs as an unprivileged user when we are root
    yield path
    shutil.rmtree(path, ignore_errors=True)  # after the embedded servers that live in it stopped


@pytest.fixture(scope="session")
def cluster_database_url(cluster_state_dir: Path) -> Iterator[str]:
    base = os.environ.get("DATABASE_URL")
    if not base:
        from storage.embedded import start_embedded_postgres

        pg = start_embedded_postgres(cluster_state_dir)
        try:
            yield pg.url
        finally:
            pg.stop()
        return
    with scratch_database(base, "tf_cluster") as url:
        yield url


@pytest.fixture(scope="session")
def cluster_redis_url(cluster_state_dir: Path) -> Iterator[str]:
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    from storage.embedded import start_embedded_redis

    redis = start_embedded_redis(cluster_state_dir)
    try:
        yield redis.url
    finally:
        redis.stop()


@dataclass
class ClusterSecrets:
    """Credentials that are real credentials (a Postgres role's and a Redis ACL user's passwords
    in the URLs), so tests/cluster/test_secrets_cluster.py can look for them where Ray records."""

    database_url: str
    redis_url: str
    values: dict[str, str]  # what must never show, by name


@pytest.fixture(scope="session")
def cluster_secrets(cluster_database_url: str, cluster_redis_url: str) -> Iterator[ClusterSecrets]:
    from tests import secret_scrape

    role, pg_password, dsn = asyncio.run(secret_scrape.create_password_role(cluster_database_url))
    redis_user, redis_password, redis_url = secret_scrape.create_redis_user(cluster_redis_url)
    try:
        yield ClusterSecrets(dsn, redis_url, {
            "JWT_SECRET": secrets.token_urlsafe(48), "database password": pg_password,
            "Redis password": redis_password, "admin password": ADMIN[1],
        })
    finally:
        asyncio.run(secret_scrape.drop_password_role(cluster_database_url, role))
        secret_scrape.drop_redis_user(cluster_redis_url, redis_user)


@pytest.fixture(scope="session")
def cluster_env(cluster_secrets: ClusterSecrets, cluster_state_dir: Path) -> dict[str, str]:
    """The app's environment, set in this process before any Ray node starts: the nodes inherit
    it, as real nodes get theirs from what starts `ray start` (deploy/README.md); only non-secret
    settings travel in the runtime_env (serve_app.runtime_env_vars)."""
    env = {
        "DATABASE_URL": cluster_secrets.database_url,
        "REDIS_URL": cluster_secrets.redis_url,
        "JWT_SECRET": cluster_secrets.values["JWT_SECRET"],
        "TICKETFLOW_STATE_DIR": str(cluster_state_dir),
        "TICKETFLOW_PORT": str(free_port()),
        "TICKETFLOW_SEED_DEMO": "false",
        "TICKETFLOW_ADMIN_EMAIL": ADMIN[0],
        "TICKETFLOW_ADMIN_PASSWORD": ADMIN[1],
        # Cheap hashing in tests only: production uses argon2id at OWASP's minimum.
        "TICKETFLOW_PASSWORD_HASH_MEMORY_KIB": "64",
        "TICKETFLOW_PASSWORD_HASH_TIME_COST": "1",
        "TICKETFLOW_PAYMENT_LATENCY_MS": str(PAYMENT_LATENCY_MS),
        "TICKETFLOW_AUTH_USER_CACHE_SECONDS": "0",
        "TICKETFLOW_RATE_LIMIT_IP_PER_MINUTE": "100000",
        "TICKETFLOW_RATE_LIMIT_USER_PER_MINUTE": "100000",
        "TICKETFLOW_RATE_LIMIT_AUTH_PER_MINUTE": "100000",
        # Seat actors must not retire during the test: the point is to see them restart.
        "TICKETFLOW_SEAT_ACTOR_IDLE_SECONDS": "600",
        # A saga cut by the node loss is resumed quickly, and never given up within the test.
        "TICKETFLOW_SAGA_STALE_AFTER_SECONDS": "3",
        "TICKETFLOW_SAGA_RECOVERY_INTERVAL_SECONDS": "1",
        "TICKETFLOW_SAGA_STEP_TIMEOUT_SECONDS": "5",
        "TICKETFLOW_SAGA_TIMEOUT_SECONDS": "90",
        "TICKETFLOW_NOTIFY_POLL_SECONDS": "0.5",
        "TICKETFLOW_NOTIFY_RETRY_BASE_SECONDS": "0.5",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "disabled",  # a private test cluster; no token written to $HOME
        # The head's autoscaler/dashboard metrics ports are fixed by default: another Ray on this
        # machine (the main test session) would collide with ours.
        "AUTOSCALER_METRIC_PORT": str(free_port()),
        "DASHBOARD_METRIC_PORT": str(free_port()),
    }
    for name in ("SMTP_URL", "STRIPE_API_KEY", "STRIPE_API_BASE", "RAY_ADDRESS"):
        os.environ.pop(name, None)  # simulated cards, outbox emails, our own cluster
    os.environ.update(env)
    from config.settings import get_settings

    get_settings.cache_clear()
    return env


@dataclass
class RunningCluster:
    cluster: Any  # ray.cluster_utils.Cluster
    head: Any  # ray._private.node.Node
    workers: list[Any]
    url: str

    def node_id(self, node: Any) -> str:
        return str(node.node_id)


@pytest.fixture(scope="session")
def ray_cluster(cluster_env: dict[str, str]) -> Iterator[RunningCluster]:  # noqa: ARG001 - sets the env first
    """Head (1 CPU, the only node with `tf_head`) + two 1-CPU workers, the app served from it."""
    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    import serve_app
    from actors import names
    from actors.saga_client import start_service_actors
    from config.settings import get_settings

    if ray.is_initialized():
        pytest.skip(RUN_ALONE)
    settings = get_settings()
    asyncio.run(serve_app.prepare_database(settings, seed=False))
    os.environ["RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"] = serve_app.PROXY_CALLBACK

    started = time.monotonic()
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "resources": {HEAD_RESOURCE: 1},
        # The dashboard, as on a real head: its state API is searched for secrets.
        "include_dashboard": True, "dashboard_host": "127.0.0.1", "dashboard_port": free_port(),
        # The head's dashboard agent defaults to port 52365, as does the main session's Ray.
        "dashboard_agent_listen_port": free_port(),
        "_system_config": FAST_FAILURE_DETECTION,
    })
    try:
        workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
        cluster.wait_for_nodes()
        ray.init(
            address=cluster.address, namespace=names.NAMESPACE, log_to_driver=False, logging_level="ERROR",
            runtime_env={"env_vars": serve_app.runtime_env_vars()},
        )
        # All nodes share 127.0.0.1 here, so one proxy (on the head) holds the port. The gateway
        # replica is pinned to the head as well: these tests take workers away, and the HTTP
        # ingress surviving that is Serve's business; the seat actors surviving it is ours.
        serve.start(
            proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": settings.port},
            logging_config={"log_level": "WARNING", "enable_access_log": False},
        )
        gateway = serve_app.Gateway.options(  # type: ignore[attr-defined]
            ray_actor_options={"num_cpus": 0, "resources": {HEAD_RESOURCE: 0.01}},
        )
        serve.run(gateway.bind(), name="ticketflow", route_prefix="/")
        start_service_actors()
        print(f"\ncluster of 3 nodes serving in {time.monotonic() - started:.1f} s", flush=True)
        yield RunningCluster(cluster, cluster.head_node, workers, f"http://127.0.0.1:{settings.port}")
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest_asyncio.fixture(scope="session")
async def cluster_http(ray_cluster: RunningCluster) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=ray_cluster.url, timeout=30.0) as client:
        deadline = time.monotonic() + 30
        while True:  # the route table reaches the proxy a moment after serve.run returns
            try:
                if (await client.get("/health")).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the Serve app never answered /health"
            await asyncio.sleep(0.2)
        yield client


@pytest_asyncio.fixture(scope="session")
async def cluster_db(cluster_env: dict[str, str], ray_cluster: RunningCluster) -> AsyncIterator[asyncpg.Pool]:  # noqa: ARG001 - migrated by ray_cluster
    pool = await asyncpg.create_pool(cluster_env["DATABASE_URL"], min_size=1, max_size=4)
    assert pool is not None
    yield pool
    await pool.close()
