"""Request bodies: storable text only, bounded nesting, unknown fields ignored; CORS off by default."""

from __future__ import annotations

import httpx
import pytest
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from api.http import CorsMiddleware
from api.schemas import MAX_BODY_DEPTH, CreateBookingRequest, RegisterUserRequest, body_problem
from config.settings import get_settings


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"name": "a\x00b"}, "NUL"),
        ({"name": "a\ud800"}, "surrogates"),
        ({"a\x00": 1}, "NUL"),
        ({"list": [[["\udfff"]]]}, "surrogates"),
        ({"deep": [[]] * 2}, None),
        ({"name": "علی\u200cرضا 🎫 \U0001f468\u200d\U0001f469"}, None),
    ],
)
def test_body_problem(data: object, problem: str | None) -> None:
    found = body_problem(data)
    assert (found is None) if problem is None else (problem in (found or ""))


def test_nesting_is_bounded_without_recursion() -> None:
    deep: object = "x"
    for _ in range(100_000):  # far past Python's recursion limit
        deep = [deep]
    assert "nested" in (body_problem({"a": deep}) or "")
    shallow: object = "x"
    for _ in range(MAX_BODY_DEPTH - 1):
        shallow = [shallow]
    assert body_problem(shallow) is None


def test_unknown_fields_are_ignored_and_bad_text_refused() -> None:
    body = RegisterUserRequest.model_validate(
        {"name": "Ann", "email": "a@example.com", "password": "Passw0rdX", "role": "ADMIN"}
    )
    assert "role" not in body.model_dump()
    booking = CreateBookingRequest.model_validate(
        {
            "eventId": "evnt_1",
            "seatIds": ["seat_A1"],
            "paymentMethod": {"type": "card", "token": "tok_visa"},
            "totalAmount": 1,
            "status": "CONFIRMED",
            "userId": "usr_other",
        }
    )
    # Only the request's own fields (the best-available ones unset); never a price, status or owner.
    assert set(booking.model_dump()) == {
        "eventId",
        "seatIds",
        "quantity",
        "tier",
        "together",
        "paymentMethod",
    }
    assert booking.quantity is None and booking.tier is None
    with pytest.raises(ValidationError, match="NUL"):
        RegisterUserRequest.model_validate(
            {"name": "Ann", "email": "a@example.com", "password": "Passw0rdX\x00"}
        )


async def _ok(_request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


async def test_no_cors_headers_unless_origins_are_configured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TICKETFLOW_CORS_ORIGINS", raising=False)
    get_settings.cache_clear()
    app = CorsMiddleware(Starlette(routes=[Route("/x", _ok)]))
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t"
        ) as client:
            r = await client.get("/x", headers={"Origin": "https://app.example.com"})
            assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
            r = await client.options(
                "/x",
                headers={
                    "Origin": "https://app.example.com",
                    "Access-Control-Request-Method": "GET",
                },
            )
            assert "access-control-allow-origin" not in r.headers
    finally:
        get_settings.cache_clear()
