"""A three-node Ray cluster on this machine, with the real app on it, for the multi-node tests.

These tests need a pytest session of their own: the rest of the suite starts one local Ray for
its whole session (tests/conftest.py `server`), and one process cannot hold two Ray clusters.
Run them with

    python -m pytest -m cluster tests/cluster

A session that also collects other tests skips them (with that command as the reason).

The boot is tests/conftest.py's (tests/boot.py): a fresh database on the server DATABASE_URL
names (else an embedded Postgres), REDIS_URL (else an embedded Redis), here both reached through a
role/user with a password, a random JWT secret, cheap password hashing; then migrations,
`Cluster(head + 2 workers)` (dashboard on the head), Serve and the service actors.
Emails go to the outbox (no SMTP), cards to the simulated processor.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio

from supervision.ports import free_port
from tests import boot
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
    config.addinivalue_line(
        "markers", f"{CLUSTER_MARK}: multi-node Ray cluster tests ({RUN_ALONE})"
    )


@pytest.hookimpl(trylast=True)  # after `-m` has deselected what it deselects
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:  # noqa: ARG001
    cluster_items = [i for i in items if i.get_closest_marker(CLUSTER_MARK)]
    if cluster_items and len(cluster_items) < len(items):
        for item in cluster_items:
            item.add_marker(pytest.mark.skip(reason=RUN_ALONE))


@pytest.fixture(scope="session")
def cluster_state_dir() -> Iterator[Path]:
    path = boot.make_state_dir("tf-cluster-")
    yield path
    shutil.rmtree(path, ignore_errors=True)  # after the embedded servers that live in it stopped


@pytest.fixture(scope="session")
def cluster_database_url(cluster_state_dir: Path) -> Iterator[str]:
    with boot.postgres_url(cluster_state_dir, "tf_cluster", {}) as url:
        yield url


@pytest.fixture(scope="session")
def cluster_redis_url(cluster_state_dir: Path) -> Iterator[str]:
    with boot.redis_url(cluster_state_dir, {}) as url:
        yield url


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
        yield ClusterSecrets(
            dsn,
            redis_url,
            {
                "JWT_SECRET": secrets.token_urlsafe(48),
                "database password": pg_password,
                "Redis password": redis_password,
                "admin password": ADMIN[1],
            },
        )
    finally:
        asyncio.run(secret_scrape.drop_password_role(cluster_database_url, role))
        secret_scrape.drop_redis_user(cluster_redis_url, redis_user)


@pytest.fixture(scope="session")
def cluster_env(cluster_secrets: ClusterSecrets, cluster_state_dir: Path) -> dict[str, str]:
    """The app's environment, set in this process before any Ray node starts: the nodes inherit
    it, as real nodes get theirs from what starts `ray start` (deploy/README.md); only non-secret
    settings travel in the runtime_env (ray_env.runtime_env_vars)."""
    for name in ("SMTP_URL", "STRIPE_API_KEY", "STRIPE_API_BASE", "RAY_ADDRESS"):
        os.environ.pop(name, None)  # simulated cards, outbox emails, our own cluster
    return boot.app_env(
        database_url=cluster_secrets.database_url,
        redis_url=cluster_secrets.redis_url,
        state_dir=cluster_state_dir,
        JWT_SECRET=cluster_secrets.values["JWT_SECRET"],
        TICKETFLOW_PAYMENT_LATENCY_MS=str(PAYMENT_LATENCY_MS),
        # Seat actors must not retire during the test: the point is to see them restart.
        TICKETFLOW_SEAT_ACTOR_IDLE_SECONDS="600",
        # A saga cut by the node loss is resumed quickly (boot.app_env), and never given up within the test.
        TICKETFLOW_SAGA_TIMEOUT_SECONDS="90",
        RAY_AUTH_MODE="disabled",  # a private test cluster; no token written to $HOME
        # The head's autoscaler/dashboard metrics ports are fixed by default: another Ray on this
        # machine (the main test session) would collide with ours.
        AUTOSCALER_METRIC_PORT=str(free_port()),
        DASHBOARD_METRIC_PORT=str(free_port()),
    )


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
    from ray.cluster_utils import Cluster

    import serve_app
    from actors import names
    from cli import ray_env

    if ray.is_initialized():
        pytest.skip(RUN_ALONE)
    started = time.monotonic()
    clusters: list[Any] = []
    workers: list[Any] = []

    def start_ray() -> None:  # after boot set the environment the nodes inherit
        cluster = Cluster(
            initialize_head=True,
            head_node_args={
                "num_cpus": 1,
                "resources": {HEAD_RESOURCE: 1},
                # The dashboard, as on a real head: its state API is searched for secrets.
                "include_dashboard": True,
                "dashboard_host": "127.0.0.1",
                "dashboard_port": free_port(),
                # The head's dashboard agent defaults to port 52365, as does the main session's Ray.
                "dashboard_agent_listen_port": free_port(),
                "_system_config": FAST_FAILURE_DETECTION,
            },
        )
        clusters.append(cluster)
        workers.extend(cluster.add_node(num_cpus=1) for _ in range(2))
        cluster.wait_for_nodes()
        ray.init(
            address=cluster.address,
            namespace=names.NAMESPACE,
            log_to_driver=False,
            logging_level="ERROR",
            runtime_env={"env_vars": ray_env.runtime_env_vars()},
        )

    # All nodes share 127.0.0.1 here, so one proxy (on the head) holds the port. The gateway
    # replica is pinned to the head as well: these tests take workers away, and the HTTP
    # ingress surviving that is Serve's business; the seat actors surviving it is ours.
    gateway = serve_app.Gateway.options(  # type: ignore[attr-defined]
        ray_actor_options={"num_cpus": 0, "resources": {HEAD_RESOURCE: 0.01}},
    )
    try:
        with boot.serve_app_on_ray(
            start_ray,
            app=gateway.bind(),
            proxy_location="HeadOnly",
            logging_config={"log_level": "WARNING", "enable_access_log": False},
        ) as url:
            print(f"\ncluster of 3 nodes serving in {time.monotonic() - started:.1f} s", flush=True)
            yield RunningCluster(clusters[0], clusters[0].head_node, workers, url)
    finally:
        for cluster in clusters:
            cluster.shutdown()


@pytest_asyncio.fixture(scope="session")
async def cluster_http(ray_cluster: RunningCluster) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=ray_cluster.url, timeout=30.0) as client:
        yield client  # the app answered /health already (boot.serve_app_on_ray)


@pytest_asyncio.fixture(scope="session")
async def cluster_db(
    cluster_env: dict[str, str],
    ray_cluster: RunningCluster,  # noqa: ARG001 - migrated by ray_cluster
) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(cluster_env["DATABASE_URL"], min_size=1, max_size=4)
    yield pool
    await pool.close()
