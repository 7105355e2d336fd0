"""What Ray's workers are told, and how they find the secrets they are not told (issue 17)."""

from __future__ import annotations

import json
import os
import secrets
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from cli import ray_env
from config import secrets as secrets_config
from config.settings import Settings, get_settings

ROOT = Path(__file__).resolve().parents[2]
SECRETS = {
    "DATABASE_URL": "postgresql://tf:pg-pw-11aa@db.example:5432/tf",
    "REDIS_URL": "redis://tf:redis-pw-22bb@cache.example:6379/0",
    # Made at run time: a secret written in the repository is one TICKETFLOW_ENV=prod refuses.
    "JWT_SECRET": "jwt-secret-33cc-" + secrets.token_hex(16),
    "JWT_PREVIOUS_SECRET": "jwt-previous-44dd-0123456789abcdefghijklmnopq",
    "STRIPE_API_KEY": "sk_test_55ee0123456789",
    "SMTP_URL": "smtp://mailer:smtp-pw-66ff@mail.example:587",
    "TICKETFLOW_ADMIN_PASSWORD": "Admin-pw-77gg",
}


@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    for name in list(os.environ):
        if name.startswith("TICKETFLOW_") or secrets_config.is_secret(name):
            monkeypatch.delenv(name)
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("TICKETFLOW_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("TICKETFLOW_SAGA_POOL_SIZE", "3")
    monkeypatch.setenv("SEAT_LOCK_TTL", "120")
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def test_every_secret_setting_is_listed_as_one() -> None:
    # A new SecretStr setting must be kept out of Ray's runtime_env too.
    secret_typed = {n for n, f in Settings.model_fields.items() if "SecretStr" in str(f.annotation)}
    assert secret_typed <= set(secrets_config.SECRET_FIELDS)
    assert {"database_url", "redis_url", "smtp_url"} <= set(
        secrets_config.SECRET_FIELDS
    )  # passwords in URLs


def test_prefixed_spellings_are_secret_too() -> None:
    for name in (
        "JWT_SECRET",
        "TICKETFLOW_JWT_SECRET",
        "TICKETFLOW_DATABASE_URL",
        "TICKETFLOW_ADMIN_PASSWORD",
        "STRIPE_API_KEY",
        "TICKETFLOW_SMTP_URL",
        "JWT_PREVIOUS_SECRET",
    ):
        assert secrets_config.is_secret(name), name
    for name in ("TICKETFLOW_PORT", "SEAT_LOCK_TTL", "STRIPE_API_BASE", "TICKETFLOW_SECRETS_FILE"):
        assert not secrets_config.is_secret(name), name


def test_the_runtime_env_carries_no_secret_only_where_the_file_is(secret_env: Path) -> None:
    env = ray_env.runtime_env_vars()
    assert not set(env) & secrets_config.secret_env_names()
    text = json.dumps(env)
    assert not [name for name, value in SECRETS.items() if value in text]
    # The non-secret settings keep travelling.
    assert env["TICKETFLOW_SAGA_POOL_SIZE"] == "3"
    assert env["SEAT_LOCK_TTL"] == "120"
    assert env[secrets_config.SECRETS_FILE_VAR] == str(secret_env.resolve() / "secrets.json")


@pytest.mark.usefixtures("secret_env")
def test_the_secrets_file_is_0600_and_holds_what_workers_need() -> None:
    path = Path(ray_env.runtime_env_vars()[secrets_config.SECRETS_FILE_VAR])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    stored = json.loads(path.read_text())
    assert stored == {
        k: v for k, v in SECRETS.items() if k != "TICKETFLOW_ADMIN_PASSWORD"
    }  # driver's only


def test_an_existing_secrets_file_is_made_0600_again(tmp_path: Path) -> None:
    path = secrets_config.write_secrets_file(tmp_path, {"JWT_SECRET": "a"})
    path.chmod(0o644)
    secrets_config.write_secrets_file(tmp_path, {"JWT_SECRET": "b"})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == {"JWT_SECRET": "b"}
    assert [p.name for p in tmp_path.iterdir()] == ["secrets.json"]  # no partial file left


def _settings_in_a_fresh_process(env: dict[str, str]) -> dict[str, str | None]:
    """get_settings() as a Ray worker would run it: a new process with only this environment."""
    code = (
        "import json; from config.settings import get_settings; s = get_settings(); "
        "r = lambda v: None if v is None else getattr(v, 'get_secret_value', lambda: v)(); "
        "print(json.dumps({f: r(getattr(s, f)) for f in "
        "('database_url', 'redis_url', 'jwt_secret', 'jwt_previous_secret', 'stripe_api_key', 'smtp_url')}))"
    )
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("TICKETFLOW_") and not secrets_config.is_secret(k)
    }
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**base, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return dict(json.loads(out))


def test_a_worker_without_the_secrets_in_its_environment_reads_them_from_the_file(
    tmp_path: Path,
) -> None:
    path = secrets_config.write_secrets_file(
        tmp_path, {k: v for k, v in SECRETS.items() if k != "TICKETFLOW_ADMIN_PASSWORD"}
    )
    got = _settings_in_a_fresh_process({secrets_config.SECRETS_FILE_VAR: str(path)})
    assert got == {
        "database_url": SECRETS["DATABASE_URL"],
        "redis_url": SECRETS["REDIS_URL"],
        "jwt_secret": SECRETS["JWT_SECRET"],
        "jwt_previous_secret": SECRETS["JWT_PREVIOUS_SECRET"],
        "stripe_api_key": SECRETS["STRIPE_API_KEY"],
        "smtp_url": SECRETS["SMTP_URL"],
    }


def test_the_nodes_own_environment_wins_over_the_file(tmp_path: Path) -> None:
    path = secrets_config.write_secrets_file(
        tmp_path, {"JWT_SECRET": "from-the-file", "SMTP_URL": "smtp://file"}
    )
    got = _settings_in_a_fresh_process(
        {secrets_config.SECRETS_FILE_VAR: str(path), "TICKETFLOW_JWT_SECRET": "from-env"}
    )
    assert got["jwt_secret"] == "from-env"
    assert got["smtp_url"] == "smtp://file"


def test_a_secrets_file_this_node_cannot_read_leaves_its_environment(tmp_path: Path) -> None:
    got = _settings_in_a_fresh_process(
        {
            secrets_config.SECRETS_FILE_VAR: str(tmp_path / "on-another-machine.json"),
            "JWT_SECRET": "node-env",
        }
    )
    assert got["jwt_secret"] == "node-env"
    assert got["database_url"] is None


def test_worker_secrets_reveal_secret_strings() -> None:
    s = Settings(_env_file=None, jwt_secret=SecretStr("x" * 40), smtp_url="smtp://u:p@h")
    assert secrets_config.worker_secrets(s)["JWT_SECRET"] == "x" * 40
    assert secrets_config.worker_secrets(s)["SMTP_URL"] == "smtp://u:p@h"
