"""Middleware for Serve's HTTP proxy (RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH).

Serve's proxy always runs its own request-id middleware: it invents a UUID when the client sent
none and appends `X-Request-ID` to every response, next to the one the gateway sets. This
middleware wraps it: it gives requests without a sane id a `req_<ULID>` before Serve looks, and
leaves exactly one `x-request-id` on the way out.

It also keeps the proxy's own failures inside the API's error contract: while no Gateway replica
can take a request (one is restarting, say), Serve's proxy answers a plain-text 503, or answers
nothing at all (then uvicorn sends a plain-text 500). Both become 503 `SERVICE_UNAVAILABLE` in
the error envelope, with `Retry-After`. The Gateway's own errors are JSON already and pass
unchanged.
"""

from __future__ import annotations

import json
import logging

from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from domain.ids import request_id_from

logger = logging.getLogger(__name__)
RETRY_AFTER_SECONDS = 1
UNAVAILABLE_MESSAGE = "The service is briefly unavailable; try again in a moment."


def unavailable_body(request_id: str) -> bytes:
    error = {"code": "SERVICE_UNAVAILABLE", "message": UNAVAILABLE_MESSAGE, "requestId": request_id}
    return json.dumps({"error": error}).encode()


async def send_unavailable(send: Send, request_id: bytes) -> None:
    body = unavailable_body(request_id.decode())
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", str(RETRY_AFTER_SECONDS).encode()),
                (b"cache-control", b"no-store"),
                (b"x-request-id", request_id),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _is_proxy_failure(message: Message) -> bool:
    """A 5xx the Gateway did not write: every Gateway response is JSON."""
    if message["status"] < 500:
        return False
    content_type = next(
        (v for k, v in message.get("headers", []) if k.lower() == b"content-type"), b""
    )
    return not content_type.startswith(b"application/json")


class ProxyRequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = [(k, v) for k, v in scope["headers"] if k != b"x-request-id"]
        incoming = next((v for k, v in scope["headers"] if k == b"x-request-id"), b"")
        request_id = request_id_from(incoming.decode("latin-1")).encode()
        headers.append((b"x-request-id", request_id))
        scope = {**scope, "headers": headers}
        started = replaced = False

        async def send_once(message: Message) -> None:
            nonlocal started, replaced
            if message["type"] == "http.response.start":
                started = True
                if _is_proxy_failure(message):
                    replaced = True
                    await send_unavailable(send, request_id)
                    return
                out = [
                    (k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"
                ]
                out.append((b"x-request-id", request_id))
                message = {**message, "headers": out}
            elif replaced:
                return  # the proxy's own plain-text body
            await send(message)

        try:
            await self.app(scope, receive, send_once)
        except Exception:
            if started:
                raise
            logger.warning(
                "Serve's proxy failed before answering %s; answered 503",
                scope.get("path"),
                exc_info=True,
            )
            await send_unavailable(send, request_id)
            return
        if not started:
            # Serve's proxy gives up on a request without a word when the replica it was sent to
            # died; uvicorn would then send a plain-text 500.
            await send_unavailable(send, request_id)


def middlewares() -> list[Middleware]:
    return [Middleware(ProxyRequestIdMiddleware)]
