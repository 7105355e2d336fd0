"""The FastAPI application: routers, error envelope, OpenAPI."""

from __future__ import annotations

from fastapi import Depends, FastAPI

from api import routes_bookings, routes_catalog, routes_queue, routes_system, routes_users
from api.deps import limit_by_ip
from api.http import CorsMiddleware, RequestContextMiddleware, install_error_handlers
from api.routes_system import VERSION
from api.schemas import ErrorResponse

DESCRIPTION = """TicketFlow: every seat sold exactly once.

Errors always have the shape `{"error": {"code", "message", "requestId"}}`; every response
carries `X-Request-Id`. Authenticate with `Authorization: Bearer <token>` from `/api/users/login`.
"""


def _base_app(title: str) -> FastAPI:
    """An app with TicketFlow's error envelope, request ids, security headers and CORS."""
    app = FastAPI(
        title=title,
        version=VERSION,
        description=DESCRIPTION,
        responses={
            400: {"model": ErrorResponse, "description": "Validation error"},
            401: {"model": ErrorResponse, "description": "Missing or invalid token"},
            404: {"model": ErrorResponse, "description": "Not found"},
            500: {"model": ErrorResponse, "description": "Unexpected error"},
            503: {"model": ErrorResponse, "description": "A dependency is unavailable"},
        },
    )
    install_error_handlers(app)
    # The last added is the outermost: CORS answers inside the request-id middleware, so that a
    # preflight carries X-Request-Id and the security headers like every other response.
    app.add_middleware(CorsMiddleware)
    app.add_middleware(RequestContextMiddleware)
    return app


def create_places_app() -> FastAPI:
    """The waiting room's place reads alone, served under the `/api/queue` route prefix (serve_app:
    the places application): the same answers as the Gateway's route, in a process of its own."""
    app = _base_app("TicketFlow waiting-room places")
    app.include_router(routes_queue.places, dependencies=[Depends(limit_by_ip)])
    return app


def create_app() -> FastAPI:
    app = _base_app("TicketFlow")
    # Every request is matched against the routes in order: the on-sale's hot routes come early.
    app.include_router(routes_system.router)
    for module in (routes_bookings, routes_queue, routes_users, routes_catalog):
        app.include_router(module.router, dependencies=[Depends(limit_by_ip)])
    app.include_router(routes_system.notifications)  # limited per address by its own router
    return app
