"""`ticketflow serve`: start the embedded services, Ray and the app; watch; stop in order."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import threading

from ray import serve

from cli.databases import embedded_services, prepare_database
from cli.ray_env import start_ray
from cli.signals import on_stop_signals
from config.settings import Settings, get_settings
from serve_app import deploy as deploy_applications
from supervision.ports import port_in_use
from supervision.processes import stop_descendants
from supervision.state_dir import StateDirBusy, try_acquire
from supervision.supervisor import EmbeddedServices, ServiceLost, failure_reason

logger = logging.getLogger(__name__)


def deploy(settings: Settings) -> None:
    from actors.saga_client import start_service_actors

    serve.start(http_options={"host": settings.host, "port": settings.port})
    deploy_applications()
    start_service_actors()


def cmd_serve(_args: argparse.Namespace) -> int:
    """Serve until SIGTERM/SIGINT (0); any start-up failure or a lost database exits 1, an admin
    email that belongs to a non-admin account 2.

    A failure leaves nothing behind, as a stop does: whatever was started is stopped in reverse
    order, then any process of ours still running is killed; the last line on stderr says why.
    """
    from api.bootstrap import AdminEmailTaken

    base = get_settings()
    # Checked before anything is started or touched: a second server must not disturb the first.
    # On a shared cluster (RAY_ADDRESS) the port is its Serve proxy's, possibly up from before.
    if not base.ray_address and port_in_use(base.host, base.port):
        return _serve_failed(
            f"cannot start: port {base.port} on {base.host} is already in use "
            "(another server? set TICKETFLOW_PORT)"
        )
    try:
        lock = try_acquire(base.state_dir.resolve(), "serve")
    except StateDirBusy as busy:
        return _serve_failed(f"cannot start: {busy}")
    stop = threading.Event()
    on_stop_signals(stop)
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
        on_stop_signals(stop)
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
