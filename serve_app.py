"""TicketFlow's Serve applications: the Gateway (`app`, on `/`) and the waiting room's place reads
(`places_app`, on `/api/queue`), their deployments and builders.

`serve run serve_app:app` / `serve build serve_app:app serve_app:places_app` (deploy/) start them;
so does `ticketflow serve` (`deploy`; the command line lives in cli/).

Why the place reads have an application of their own: every buyer in a waiting room looks at
their place now and then, and a look costs a request's worth of CPU in whatever process answers
it. In the Gateway's process those looks queue in the same event loop as the admitted buyers'
bookings; with a long line that is what the bookings' p99 is made of (docs/waiting-room.md).
The Gateway still answers `GET /api/queue/{ticket}` itself when the places application is not
deployed (a config with the Gateway alone): only the process differs.
"""

from __future__ import annotations

import logging

from pydantic import BaseModel
from ray import serve
from ray.serve import Application

from api.app import create_app, create_places_app
from config.settings import get_settings
from supervision.priority import set_priority

fastapi_app = create_app()
places_fastapi_app = create_places_app()
APP_NAME = "ticketflow"
PLACES_APP_NAME = "ticketflow-places"
PLACES_ROUTE_PREFIX = "/api/queue"


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


@serve.deployment(
    name="PlaceReader",
    max_ongoing_requests=256,
    ray_actor_options={"num_cpus": 0},
    logging_config={"enable_access_log": False},
)
@serve.ingress(places_fastapi_app)
class PlaceReader:
    """`GET /api/queue/{ticket}` in a process of its own: one Redis script per look, no actor."""

    def __init__(self) -> None:
        settings = get_settings()
        for package in APP_LOGGERS:
            logging.getLogger(package).setLevel(settings.log_level)
        set_priority(settings.place_reader_priority)


APP_LOGGERS = (
    "api",
    "application",
    "actors",
    "domain",
    "storage",
    "providers",
    "cli",
    "ticketflow",
)


class AppArgs(BaseModel):
    pass


def build_app(args: AppArgs) -> Application:  # noqa: ARG001 - the builder signature Serve expects
    return Gateway.bind()  # type: ignore[attr-defined,no-any-return]


def build_places_app(args: AppArgs) -> Application:  # noqa: ARG001 - as build_app
    return PlaceReader.bind()  # type: ignore[attr-defined,no-any-return]


app = build_app(AppArgs())
places_app = build_places_app(AppArgs())


def deploy(gateway: Application | None = None) -> None:
    """Runs both applications on the Serve instance started before (`gateway`: another binding of
    the Gateway, e.g. pinned to a node; the places application is then left out)."""
    serve.run(app if gateway is None else gateway, name=APP_NAME, route_prefix="/")
    if gateway is None:
        serve.run(places_app, name=PLACES_APP_NAME, route_prefix=PLACES_ROUTE_PREFIX)
