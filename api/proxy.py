"""Middleware for Serve's HTTP proxy (RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH).

Serve's proxy always runs its own request-id middleware: it invents a UUID when the client sent
none and appends `X-Request-ID` to every response, next to the one the gateway sets. This
middleware wraps it: it gives requests without a sane id a `req_<ULID>` before Serve looks, and
leaves exactly one `x-request-id` on the way out.
"""

from __future__ import annotations

from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from domain.ids import request_id_from


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

        async def send_once(message: Message) -> None:
            if message["type"] == "http.response.start":
                out = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                out.append((b"x-request-id", request_id))
                message = {**message, "headers": out}
            await send(message)

        await self.app(scope, receive, send_once)


def middlewares() -> list[Middleware]:
    return [Middleware(ProxyRequestIdMiddleware)]
