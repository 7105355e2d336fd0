"""/health and /api/notifications."""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from actors.clients import NotifierClient
from api.deps import PrincipalDep, ServicesDep, limit_by_ip
from api.schemas import HealthResponse, NotificationHealth, NotificationItem, NotificationList
from domain.errors import ServiceUnavailable
from providers.email import check_smtp
from storage import notification_repository, system_repository

router = APIRouter()
# /health stays unlimited (load balancers and orchestrators poll it); /api/notifications is an
# /api route like the others: counted per client address.
notifications = APIRouter(
    prefix="/api/notifications", tags=["notifications"], dependencies=[Depends(limit_by_ip)]
)
VERSION = "1.0.0"
_notifier = NotifierClient()


# A health probe must answer fast even when Postgres hangs (stopped, or a network partition).
HEALTH_DB_TIMEOUT = 2.0


@router.get("/health", response_model=HealthResponse, tags=["health"])
async def health(svc: ServicesDep) -> HealthResponse:
    """Liveness for load balancers: `{status, version, uptime}`, or 503 `SERVICE_UNAVAILABLE` when
    this server cannot reach Postgres (and so cannot take bookings). Not rate-limited."""
    # A server that cannot reach Postgres cannot book: a 503 makes load balancers and uptime
    # probes send buyers elsewhere. One `SELECT 1` on a pooled connection per probe.
    try:
        postgres = await asyncio.wait_for(_postgres_status(svc), HEALTH_DB_TIMEOUT)
    except TimeoutError:
        postgres = "down"
    if postgres != "connected":
        raise ServiceUnavailable(
            "Postgres is unreachable; this server cannot take bookings until it returns"
        )
    return HealthResponse(
        status="ok", version=VERSION, uptime=int(time.monotonic() - svc.started_at)
    )


@notifications.get("/recent", response_model=NotificationList)
async def recent_notifications(principal: PrincipalDep, svc: ServicesDep) -> NotificationList:
    """The caller's notifications that were sent (at most 20, newest first): booking confirmed,
    failed or cancelled."""
    async with svc.connection() as conn:
        sent = await notification_repository.list_recent_sent(conn, principal.user_id)
    return NotificationList(
        data=[
            NotificationItem(
                id=n.id,
                type=n.type.value,
                subject=n.subject,
                sentAt=n.sent_at,
                bookingId=n.booking_id,
                status=n.status,
                createdAt=n.created_at,
            )
            for n in sent
        ]
    )


async def _postgres_status(svc: ServicesDep) -> str:
    try:
        async with svc.connection(timeout=2.0) as conn:
            await system_repository.ping(conn, timeout=2.0)
        return "connected"
    except Exception:  # noqa: BLE001 - any failure means "down" to a health check
        return "down"


async def _ray_status() -> str:
    return "connected" if await _notifier.reachable(timeout=2.0) else "down"


@notifications.get(
    "/health", response_model=NotificationHealth, responses={503: {"model": NotificationHealth}}
)
async def notifications_health(svc: ServicesDep) -> JSONResponse:
    """The notification path's dependencies: `{status, ray, postgres, smtp}`, each `connected`,
    `reachable`, `disabled` or `down`; 200 with `status` `ok`, else 503 with `degraded`."""
    ray_state, pg_state, smtp_state = await asyncio.gather(
        _ray_status(), _postgres_status(svc), check_smtp(svc.settings.smtp_url)
    )
    healthy = ray_state == "connected" and pg_state == "connected" and smtp_state != "down"
    body = NotificationHealth(
        status="ok" if healthy else "degraded",
        ray=ray_state,
        postgres=pg_state,
        smtp=str(smtp_state),
    )
    return JSONResponse(body.model_dump(), status_code=200 if healthy else 503)
