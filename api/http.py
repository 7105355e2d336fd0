"""Request ids, security headers, body limits and the one error envelope."""

from __future__ import annotations

import logging
from contextvars import ContextVar
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray.exceptions import ActorDiedError, ActorUnavailableError, GetTimeoutError, RayTaskError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from domain.errors import PayloadTooLarge, ServiceUnavailable, TicketFlowError
from domain.ids import new_id, request_id_from
from storage.pool import UNAVAILABLE_ERRORS

logger = logging.getLogger(__name__)

request_id_var: ContextVar[str] = ContextVar("request_id", default="")
MAX_BODY_BYTES = 64 * 1024
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]


def current_request_id() -> str:
    return request_id_var.get() or new_id("req")


def error_response(
    status: int,
    code: str,
    message: str,
    details: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message, "requestId": current_request_id()}
    if details:
        body["details"] = details
    return JSONResponse({"error": body}, status_code=status, headers=headers)


class RequestContextMiddleware:
    """Pure ASGI (no BaseHTTPMiddleware: it costs a task per request on the hot path)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = ""
        length = 0
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
            elif name == b"content-length":
                length = int(value) if value.isdigit() else 0
        request_id = request_id_from(incoming)
        token = request_id_var.set(request_id)
        try:

            async def send_with_headers(message: Message) -> None:
                if message["type"] == "http.response.start":
                    headers = list(message.get("headers", []))
                    headers.append((b"x-request-id", request_id.encode()))
                    headers.extend(SECURITY_HEADERS)
                    message["headers"] = headers
                await send(message)

            too_large = f"Request body exceeds {MAX_BODY_BYTES} bytes"
            if _has_nul(scope):
                # Postgres text cannot hold NUL: refused here, not as a database error later.
                response = error_response(
                    400,
                    "VALIDATION_ERROR",
                    "The URL must not contain NUL characters",
                    [{"field": "url", "message": "must not contain NUL characters"}],
                )
                await response(scope, receive, send_with_headers)
                return
            if length > MAX_BODY_BYTES:
                response = error_response(413, PayloadTooLarge.code, too_large)
                await response(scope, receive, send_with_headers)
                return
            received = 0

            async def counting_receive() -> Message:
                # A chunked body has no Content-Length: count what actually arrives.
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > MAX_BODY_BYTES:
                        # An HTTPException is the one error FastAPI's body parsing lets through.
                        raise StarletteHTTPException(413, too_large)
                return message

            started = False

            async def tracking_send(message: Message) -> None:
                nonlocal started
                started = started or message["type"] == "http.response.start"
                await send_with_headers(message)

            try:
                await self.app(scope, counting_receive, tracking_send)
            except Exception as exc:  # noqa: BLE001 - the catch-all of the error envelope
                if started:
                    raise
                response = unexpected_response(exc, scope.get("method", ""), scope.get("path", ""))
                await response(scope, receive, send_with_headers)
        finally:
            request_id_var.reset(token)


CORS_ALLOW_HEADERS = [
    "Authorization",
    "Content-Type",
    "Idempotency-Key",
    "X-Request-Id",
    "Prefer",
    "X-Admission-Token",
]
CORS_EXPOSE_HEADERS = ["X-Request-Id", "Retry-After", "Preference-Applied"]


class CorsMiddleware:
    """Cross-origin access for the origins TICKETFLOW_CORS_ORIGINS lists, and for no other.

    Starlette's CORSMiddleware answers a listed origin (preflights included). A request from any
    other origin, or with none, goes straight to the API: it gets no Access-Control-* header, and
    a preflight gets the API's own 405 envelope rather than Starlette's plain-text 400. Settings
    are read at the first request, not at import (the replica's environment decides).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._origins: frozenset[str] | None = None
        self._cors: ASGIApp = app

    def _configure(self) -> frozenset[str]:
        from starlette.middleware.cors import CORSMiddleware

        from config.settings import get_settings

        origins = frozenset(get_settings().cors_origin_list)
        self._cors = CORSMiddleware(
            self.app,
            allow_origins=sorted(origins),
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=CORS_ALLOW_HEADERS,
            expose_headers=CORS_EXPOSE_HEADERS,
            max_age=600,
        )
        self._origins = origins
        return origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        origins = self._origins if self._origins is not None else self._configure()
        if origins and scope["type"] == "http":
            origin = next((v for k, v in scope["headers"] if k == b"origin"), b"").decode("latin-1")
            if origin and (origin in origins or "*" in origins):
                await self._cors(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _has_nul(scope: Scope) -> bool:
    """A NUL in the decoded path or, percent-encoded or raw, in the query string."""
    query: bytes = scope.get("query_string", b"")
    return "\x00" in scope.get("path", "") or b"%00" in query or b"\x00" in query


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def _validation_details(exc: RequestValidationError) -> tuple[str, list[dict[str, str]]]:
    details = []
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            return "Request body is not valid JSON", [
                {"field": "body", "message": "not valid JSON"}
            ]
        message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        details.append({"field": _field(tuple(err.get("loc", ()))), "message": message})
    summary = "; ".join(f"{d['field']}: {d['message']}" for d in details[:5]) or "Invalid request"
    return summary, details


def unexpected_response(exc: BaseException, method: str, path: str) -> JSONResponse:
    """503 when a dependency is down, the error's own code when an actor raised one, else 500."""
    cause = exc.cause if isinstance(exc, RayTaskError) and exc.cause is not None else exc
    if isinstance(cause, TicketFlowError):
        return error_response(cause.http_status, cause.code, cause.message)
    if isinstance(
        cause,
        (
            ActorDiedError,
            ActorUnavailableError,
            GetTimeoutError,
            ServiceUnavailable,
            *UNAVAILABLE_ERRORS,
        ),
    ):
        logger.warning(
            "dependency unavailable on %s %s request_id=%s: %s",
            method,
            path,
            current_request_id(),
            type(cause).__name__,
        )
        return error_response(
            503,
            "SERVICE_UNAVAILABLE",
            "A dependency is unavailable; retry shortly",
            headers={"Retry-After": "1"},
        )
    logger.error(
        "unexpected error on %s %s request_id=%s", method, path, current_request_id(), exc_info=exc
    )
    return error_response(500, "INTERNAL_ERROR", "An unexpected error occurred")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(TicketFlowError)
    async def _ticketflow(_r: Request, exc: TicketFlowError) -> JSONResponse:
        headers = getattr(exc, "headers", None)
        return error_response(exc.http_status, exc.code, exc.message, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_r: Request, exc: RequestValidationError) -> JSONResponse:
        message, details = _validation_details(exc)
        return error_response(400, "VALIDATION_ERROR", message, details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_r: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return error_response(404, "NOT_FOUND", "No such route")
        if exc.status_code == 413:
            return error_response(413, PayloadTooLarge.code, str(exc.detail))
        if exc.status_code == 405:
            return error_response(405, "METHOD_NOT_ALLOWED", "Method not allowed on this route")
        if exc.status_code == 400:
            # FastAPI's answer to a body it could not decode for any reason but a JSON syntax
            # error (nesting too deep, invalid UTF-8, a number too long to convert, ...).
            return error_response(
                400,
                "VALIDATION_ERROR",
                "Request body could not be parsed",
                [{"field": "body", "message": "could not be parsed"}],
            )
        return error_response(exc.status_code, f"HTTP_{exc.status_code}", str(exc.detail))
