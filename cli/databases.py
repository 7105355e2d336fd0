"""The databases a command runs on: the configured ones, a running server's, or embedded ones.

Also the one-off preparation of a database (migrations, the admin account, the demo data) and the
development JWT secret kept in the state directory.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from config.settings import Settings, get_settings
from supervision.state_dir import NothingToJoin, PublishedServices, StateDirLock, acquire_or_join
from supervision.supervisor import EmbeddedServices

logger = logging.getLogger(__name__)


def load_or_create_jwt_secret(state_dir: Path) -> str:
    """A development secret, generated once and kept in the state directory (never in code)."""
    path = state_dir / "jwt_secret"
    if path.exists():
        return path.read_text().strip()
    state_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret)
    return secret


@contextmanager
def embedded_services(
    settings: Settings, *, redis: bool = True, publish_to: StateDirLock | None = None
) -> Iterator[tuple[Settings, EmbeddedServices]]:
    """Starts an embedded Postgres (and Redis) for what is not configured; yields the resolved
    settings and the running services. The caller must own the state directory."""
    state_dir = settings.state_dir.resolve()
    services = EmbeddedServices.start(
        state_dir, postgres=not settings.database_url, redis=redis and not settings.redis_url
    )
    try:
        if services.postgres is not None:
            pg = services.postgres
            os.environ["DATABASE_URL"] = pg.url
            logger.info("embedded Postgres on 127.0.0.1:%d (data in %s)", pg.port, pg.data_dir)
        if services.redis is not None:
            os.environ["REDIS_URL"] = services.redis.url
            logger.info("embedded Redis on 127.0.0.1:%d", services.redis.port)
        if publish_to is not None:
            # Other commands on this state dir then use these instead of starting their own.
            publish_to.publish(
                database_url=services.postgres.url if services.postgres else None,
                redis_url=services.redis.url if services.redis else None,
            )
        if settings.jwt_secret is None:
            os.environ["JWT_SECRET"] = load_or_create_jwt_secret(state_dir)
        get_settings.cache_clear()
        yield get_settings(), services
    finally:
        services.stop()
        get_settings.cache_clear()


# How long a short command waits for another one, or for a starting server, to be done with the
# state directory before it gives up.
OWNER_WAIT_SECONDS = 30.0


@contextmanager
def database_for_command(settings: Settings, command: str) -> Iterator[Settings]:
    """Settings with a DATABASE_URL for `migrate`, `create-admin` and `seed-demo`.

    The configured database; else the running server's embedded Postgres when a server owns
    the state directory; else an embedded Postgres of our own for the command's duration.
    """
    if settings.database_url:
        yield settings
        return
    state_dir = settings.state_dir.resolve()
    claim = acquire_or_join(state_dir, command, wait=OWNER_WAIT_SECONDS)
    if isinstance(claim, PublishedServices):
        if claim.database_url is None:
            raise NothingToJoin(state_dir, claim.owner)
        logger.info("using the embedded Postgres of the running %s", claim.owner.describe())
        os.environ["DATABASE_URL"] = claim.database_url
        get_settings.cache_clear()
        try:
            yield get_settings()
        finally:
            del os.environ["DATABASE_URL"]
            get_settings.cache_clear()
        return
    try:
        with embedded_services(settings, redis=False) as (resolved, _services):
            yield resolved
    finally:
        claim.release()


async def prepare_database(settings: Settings, *, seed: bool) -> None:
    import asyncpg

    from api.bootstrap import ensure_admin_from_settings, seed_demo
    from storage.migrate import apply_migrations

    assert settings.database_url
    conn = await asyncpg.connect(settings.database_url)
    try:
        applied = await apply_migrations(conn)
        if applied:
            logger.info("migrations applied: %s", ", ".join(applied))
        await ensure_admin_from_settings(conn, settings)
        if seed:
            await seed_demo(conn, settings)
    finally:
        await conn.close()
