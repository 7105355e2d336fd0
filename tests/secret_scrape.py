"""Looking for secrets where an attacker with the Ray dashboard or a node's log directory would.

Shared by the one-machine test (tests/cli/test_secrets_stay_secret.py) and the three-node
cluster test (tests/cluster/test_secrets_cluster.py): every file under Ray's session directory,
the server's own output, and the answers of the dashboard's state API.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path

import asyncpg
import httpx
import redis

from tests.databases import with_database

# What the dashboard shows of actors, jobs, tasks, workers and their runtime environments
# (`ray list ...` and the dashboard's pages ask exactly these), and Serve's applications.
DASHBOARD_PATHS = (
    "/api/v0/actors?detail=true&limit=10000",
    "/api/v0/jobs?detail=true&limit=10000",
    "/api/v0/runtime_envs?detail=true&limit=10000",
    "/api/v0/tasks?detail=true&limit=10000",
    "/api/v0/workers?detail=true&limit=10000",
    "/api/v0/nodes?detail=true&limit=10000",
    "/api/v0/placement_groups?detail=true&limit=10000",
    "/api/jobs/",
    "/api/serve/applications/",
    "/logical/actors",
    "/nodes?view=summary",
)
RUNTIME_ENVS_PATH = DASHBOARD_PATHS[2]
_DASHBOARD_ADDRESS = re.compile(r"Dashboard head http address: (\S+)")


def leaks_in_text(where: str, text: str | bytes, needles: Mapping[str, str]) -> list[str]:
    """`<what> in <where>` for every needle found in the text."""
    data = text if isinstance(text, bytes) else text.encode()
    return [f"{label} in {where}" for label, value in needles.items() if value.encode() in data]


def leaks_in_files(roots: Iterable[Path], needles: Mapping[str, str]) -> list[str]:
    """Every regular file under the roots (logs, metrics, runtime resources, anything Ray wrote)."""
    found: list[str] = []
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.is_symlink() or not path.is_file():
                continue
            try:
                data = path.read_bytes()
            except OSError:
                continue
            found += leaks_in_text(str(path), data, needles)
    return found


def files_under(roots: Iterable[Path]) -> int:
    return sum(1 for root in roots for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def dashboard_url(session_dir: Path) -> str:
    """Where this session's dashboard listens (it moves off 8265 when that port is taken)."""
    log = (session_dir / "logs" / "dashboard.log").read_text()
    match = _DASHBOARD_ADDRESS.search(log)
    assert match, f"no dashboard address in {session_dir}/logs/dashboard.log"
    return f"http://{match.group(1)}"


def _ray_auth_headers() -> dict[str, str]:
    # Ray's token authentication (on by default) keeps its token in ~/.ray/auth_token.
    token_file = Path.home() / ".ray" / "auth_token"
    if token_file.is_file():
        return {"Authorization": f"Bearer {token_file.read_text().strip()}"}
    return {}


def dashboard_answers(url: str) -> dict[str, str]:
    """The state API's answers, each required to be a 200."""
    answers: dict[str, str] = {}
    with httpx.Client(base_url=url, timeout=60, headers=_ray_auth_headers()) as client:
        for path in DASHBOARD_PATHS:
            r = client.get(path)
            assert r.status_code == 200, f"{path}: {r.status_code} {r.text[:300]}"
            answers[path] = r.text
    return answers


def leaks_in_dashboard(answers: Mapping[str, str], needles: Mapping[str, str]) -> list[str]:
    found: list[str] = []
    for path, text in answers.items():
        found += leaks_in_text(f"dashboard {path}", text, needles)
    return found


# -- credentials that really are credentials ------------------------------------------------------


async def create_password_role(url: str) -> tuple[str, str, str]:
    """A superuser role with a password and a database it owns, on the server `url` names.

    Returns (role, password, DSN with the password). The embedded Postgres authenticates by trust
    and ignores the password, a CI Postgres checks it; either way the DSN carries it.
    """
    role = f"tf_secret_{secrets.token_hex(4)}"
    password = f"pgpw{secrets.token_hex(12)}"
    # Identifiers and the password are our own hex, never input: DDL takes no parameters.
    conn = await asyncpg.connect(with_database(url, "postgres"))
    try:
        await conn.execute(f"CREATE ROLE \"{role}\" LOGIN SUPERUSER PASSWORD '{password}'")
        await conn.execute(f'CREATE DATABASE "{role}" OWNER "{role}"')
    finally:
        await conn.close()
    host_port = url.split("@", 1)[1].split("/", 1)[0]
    return role, password, f"postgresql://{role}:{password}@{host_port}/{role}"


async def drop_password_role(url: str, role: str) -> None:
    conn = await asyncpg.connect(with_database(url, "postgres"))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{role}" WITH (FORCE)')
        await conn.execute(f'DROP ROLE IF EXISTS "{role}"')
    finally:
        await conn.close()


def create_redis_user(url: str) -> tuple[str, str, str]:
    """A Redis ACL user with a password (the default user is left as it is, for the others).

    Returns (user, password, URL with them).
    """
    user = f"tf-secret-{secrets.token_hex(4)}"
    password = f"rdpw{secrets.token_hex(12)}"
    client = redis.Redis.from_url(url)
    try:
        client.execute_command("ACL", "SETUSER", user, "on", f">{password}", "~*", "&*", "+@all")
    finally:
        client.close()
    scheme, rest = url.split("://", 1)
    return user, password, f"{scheme}://{user}:{password}@{rest.split('@')[-1]}"


def drop_redis_user(url: str, user: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        client.execute_command("ACL", "DELUSER", user)
    finally:
        client.close()


def redis_connections_of(url: str, user: str) -> int:
    """Open connections authenticated as the ACL user (the app keeps its pool's connections)."""
    client = redis.Redis.from_url(url)
    try:
        clients = client.client_list()
    finally:
        client.close()
    return sum(1 for c in clients if c.get("user") == user)
