"""The middleware Serve's proxy runs: one request id, and its own failures in the error envelope."""

from __future__ import annotations

import json
from typing import Any

from starlette.types import Message, Receive, Scope, Send

from api.proxy import ProxyRequestIdMiddleware


def app_answering(status: int, content_type: bytes, body: bytes, *, chunks: int = 1) -> Any:
    async def app(_scope: Scope, _receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", content_type), (b"x-request-id", b"serve-uuid")],
            }
        )
        for i in range(chunks):
            await send({"type": "http.response.body", "body": body, "more_body": i < chunks - 1})

    return app


async def call(
    app: Any, request_id: bytes | None = None
) -> tuple[int, dict[bytes, list[bytes]], bytes]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        sent.append(message)

    headers = [(b"x-request-id", request_id)] if request_id else []
    await ProxyRequestIdMiddleware(app)({"type": "http", "headers": headers}, receive, send)
    start = sent[0]
    got: dict[bytes, list[bytes]] = {}
    for k, v in start["headers"]:
        got.setdefault(k.lower(), []).append(v)
    return start["status"], got, b"".join(m.get("body", b"") for m in sent[1:])


async def test_a_plain_text_failure_of_the_proxy_becomes_the_503_envelope() -> None:
    for status in (500, 502, 503, 504):
        code, headers, body = await call(
            app_answering(status, b"text/plain", b"Internal Server Error", chunks=2),
            request_id=b"abc_123",
        )
        assert code == 503
        assert headers[b"content-type"] == [b"application/json"] and headers[b"retry-after"] == [
            b"1"
        ]
        assert headers[b"x-request-id"] == [b"abc_123"]
        error = json.loads(body)["error"]
        assert (
            error["code"] == "SERVICE_UNAVAILABLE"
            and error["requestId"] == "abc_123"
            and error["message"]
        )
        assert int(headers[b"content-length"][0]) == len(body)


async def test_the_gateways_own_errors_and_successes_pass_unchanged() -> None:
    envelope = json.dumps(
        {"error": {"code": "INTERNAL_ERROR", "message": "x", "requestId": "req_1"}}
    ).encode()
    code, headers, body = await call(app_answering(500, b"application/json", envelope))
    assert code == 500 and body == envelope
    code, headers, body = await call(app_answering(200, b"application/json", b"{}"))
    assert code == 200 and body == b"{}"
    # Exactly one request id, ours (a req_ ULID when the client sent none), not Serve's UUID.
    assert len(headers[b"x-request-id"]) == 1 and headers[b"x-request-id"][0].startswith(b"req_")


async def test_no_answer_from_the_proxy_becomes_the_503_envelope_not_uvicorns_plain_500() -> None:
    async def silent(_scope: Scope, _receive: Receive, _send: Send) -> None:
        return  # what Serve's proxy does when the replica died under the request

    async def failing(_scope: Scope, _receive: Receive, _send: Send) -> None:
        raise RuntimeError("replica died")

    for app in (silent, failing):
        code, headers, body = await call(app, request_id=b"abc_123")
        assert code == 503 and json.loads(body)["error"] == {
            "code": "SERVICE_UNAVAILABLE",
            "message": json.loads(body)["error"]["message"],
            "requestId": "abc_123",
        }
        assert headers[b"retry-after"] == [b"1"]
