"""TicketFlow's Serve application: the Gateway ingress deployment, `build_app` and `app`.

`serve run serve_app:app` / `serve build serve_app:app` (deploy/) start it; so does `ticketflow
serve` (the command line lives in cli/).
"""

from __future__ import annotations

import logging

from pydantic import BaseModel
from ray import serve
from ray.serve import Application

from api.app import create_app
from config.settings import get_settings

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


app = build_app(AppArgs())
