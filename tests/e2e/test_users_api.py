"""Users, auth and the gateway basics over real HTTP against the running Serve app."""

from __future__ import annotations

import base64
import json
import secrets
import time

import httpx
import jwt

from tests.helpers import ADMIN, assert_error, auth, login, new_user


def _email() -> str:
    return f"alice-{secrets.token_hex(6)}@Example.com"


async def test_health(http: httpx.AsyncClient) -> None:
    r = await http.get("/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["version"] == "1.0.0" and isinstance(body["uptime"], int)
    assert r.headers["x-request-id"].startswith("req_")
    assert r.headers["x-content-type-options"] == "nosniff"


async def test_register_login_me(http: httpx.AsyncClient) -> None:
    email = _email()
    r = await http.post(
        "/api/users/register",
        json={"name": "Alice Example", "email": email, "password": "Secret123"},
    )
    assert r.status_code == 201, r.text
    user = r.json()
    assert set(user) == {"id", "name", "email", "role", "createdAt"}
    assert (
        user["id"].startswith("usr_") and user["email"] == email.lower() and user["role"] == "USER"
    )
    assert user["createdAt"].endswith("Z")
    assert "password" not in r.text

    r = await http.post("/api/users/login", json={"email": email.upper(), "password": "Secret123"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"token", "expiresAt", "user"}
    assert body["user"] == {k: user[k] for k in ("id", "name", "email", "role")}
    claims = jwt.decode(body["token"], options={"verify_signature": False})
    assert set(claims) == {"sub", "name", "email", "role", "iat", "exp"}
    assert claims["exp"] - claims["iat"] == 24 * 3600
    assert jwt.get_unverified_header(body["token"])["alg"] == "HS256"

    me = await http.get("/api/users/me", headers=auth(body["token"]))
    assert me.status_code == 200
    assert me.json() == user


async def test_duplicate_email_in_another_case_is_409(http: httpx.AsyncClient) -> None:
    email = _email()
    r = await http.post(
        "/api/users/register", json={"name": "Al", "email": email, "password": "Secret123"}
    )
    assert r.status_code == 201
    r = await http.post(
        "/api/users/register",
        json={"name": "Al", "email": email.swapcase(), "password": "Secret123"},
    )
    assert_error(r, 409, "EMAIL_ALREADY_EXISTS")


async def test_register_validation_errors(http: httpx.AsyncClient) -> None:
    cases = [
        {"name": "Al", "email": _email(), "password": "short1A"},
        {"name": "Al", "email": _email(), "password": "nouppercase1"},
        {"name": "Al", "email": _email(), "password": "NoDigitsHere"},
        {"name": "Al", "email": "not-an-email", "password": "Secret123"},
        {"name": "A", "email": _email(), "password": "Secret123"},
        {"name": "x" * 101, "email": _email(), "password": "Secret123"},
        {"name": "Bad\x00Name", "email": _email(), "password": "Secret123"},
        {"email": _email(), "password": "Secret123"},
        {"name": 5, "email": _email(), "password": "Secret123"},
    ]
    for body in cases:
        assert_error(await http.post("/api/users/register", json=body), 400, "VALIDATION_ERROR")


async def test_login_failures_are_401(http: httpx.AsyncClient) -> None:
    token, user = await new_user(http)
    r = await http.post("/api/users/login", json={"email": user["email"], "password": "Wrong1234"})
    assert_error(r, 401, "INVALID_CREDENTIALS")
    r = await http.post(
        "/api/users/login", json={"email": "nobody@example.com", "password": "Wrong1234"}
    )
    assert_error(r, 401, "INVALID_CREDENTIALS")
    assert_error(await http.post("/api/users/login", json={"email": "x"}), 400, "VALIDATION_ERROR")


async def test_me_rejects_bad_tokens(http: httpx.AsyncClient, app_env: dict[str, str]) -> None:
    token, user = await new_user(http)
    secret = app_env["JWT_SECRET"]
    now = int(time.time())
    claims = {
        "sub": user["id"],
        "name": user["name"],
        "email": user["email"],
        "role": "USER",
        "iat": now,
        "exp": now + 60,
    }
    header, payload, signature = token.split(".")
    forged = json.loads(base64.urlsafe_b64decode(payload + "=="))
    forged["role"] = "ADMIN"
    tampered = ".".join(
        [
            header,
            base64.urlsafe_b64encode(json.dumps(forged).encode()).decode().rstrip("="),
            signature,
        ]
    )
    none_header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').decode().rstrip("=")
    none_token = f"{none_header}.{payload}."
    bad = {
        "missing": {},
        "garbage": auth("not.a.token"),
        "not bearer": {"Authorization": f"Basic {token}"},
        "tampered": auth(tampered),
        "alg none": auth(none_token),
        "expired": auth(
            jwt.encode({**claims, "iat": now - 100, "exp": now - 10}, secret, algorithm="HS256")
        ),
        "wrong secret": auth(
            jwt.encode(claims, "another-secret-of-sufficient-length-123", algorithm="HS256")
        ),
        "missing claim": auth(
            jwt.encode({k: v for k, v in claims.items() if k != "role"}, secret, algorithm="HS256")
        ),
        # Signed with the real secret, but not what we issue (issue 17).
        "exp a string": auth(
            jwt.encode({**claims, "exp": str(now + 3600)}, secret, algorithm="HS256")
        ),
        "iat in the future": auth(
            jwt.encode({**claims, "iat": now + 600, "exp": now + 3600}, secret, algorithm="HS256")
        ),
        "nbf in the future": auth(
            jwt.encode({**claims, "nbf": now + 600}, secret, algorithm="HS256")
        ),
        "another typ": auth(
            jwt.encode(claims, secret, algorithm="HS256", headers={"typ": "at+jwt"})
        ),
    }
    for name, headers in bad.items():
        r = await http.get("/api/users/me", headers=headers)
        assert r.status_code == 401, name
        assert_error(r, 401, "UNAUTHORIZED")
    good = await http.get(
        "/api/users/me", headers=auth(jwt.encode(claims, secret, algorithm="HS256"))
    )
    assert good.status_code == 200


async def test_request_id_is_echoed_or_generated(http: httpx.AsyncClient) -> None:
    r = await http.get("/health", headers={"X-Request-Id": "client-trace_42"})
    assert r.headers["x-request-id"] == "client-trace_42"
    r = await http.get("/api/users/me", headers={"X-Request-Id": "bad id with spaces"})
    assert r.headers["x-request-id"].startswith("req_")
    assert r.json()["error"]["requestId"] == r.headers["x-request-id"]


async def test_unknown_route_and_non_json_body(http: httpx.AsyncClient) -> None:
    assert_error(await http.get("/api/nothing-here"), 404, "NOT_FOUND")
    r = await http.post(
        "/api/users/login", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert_error(r, 400, "VALIDATION_ERROR")
    r = await http.post(
        "/api/users/login",
        content=b"email=a",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert_error(r, 400, "VALIDATION_ERROR")


async def test_openapi_and_docs(http: httpx.AsyncClient) -> None:
    spec = (await http.get("/openapi.json")).json()
    assert "/api/bookings" in spec["paths"] and "/api/users/register" in spec["paths"]
    assert "RegisterUserRequest" in spec["components"]["schemas"]
    docs = await http.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


async def test_admin_bootstrapped_from_settings(http: httpx.AsyncClient) -> None:
    token = await login(http, *ADMIN)
    me = (await http.get("/api/users/me", headers=auth(token))).json()
    assert me["role"] == "ADMIN"
