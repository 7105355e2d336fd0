"""The production guard refuses JWT secrets that are published or too weak, and every JWT secret
value written anywhere in the repository is one of the refused ones (so the list cannot drift)."""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from config.settings import PLACEHOLDER_SECRETS, Settings, jwt_secret_problem

ROOT = Path(__file__).resolve().parents[2]
TEXT_SUFFIXES = {
    ".md",
    ".txt",
    ".yaml",
    ".yml",
    ".toml",
    ".cfg",
    ".ini",
    ".json",
    ".sh",
    ".py",
    ".sql",
    "",
}
# JWT_SECRET=value, JWT_SECRET: value, --from-literal=JWT_SECRET=value, "JWT_SECRET": "value"
_TEXT_VALUE = re.compile(r"""\bJWT_SECRET["']?[ \t]*[:=][ \t]*["']?([^\s"'\\]+)""", re.IGNORECASE)
# In Python only string literals count, optionally repeated ("x" * 40).
_PY_VALUE = re.compile(
    r"""\bJWT_SECRET["']\s*[:,]\s*(["'])([^"']*)\1(?:\s*\*\s*(\d+))?""", re.IGNORECASE
)


def _prod(secret: str | None) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        env="prod",
        jwt_secret=SecretStr(secret) if secret is not None else None,
        database_url="postgresql://u:p@db/tf",
        stripe_api_key=SecretStr("sk_test_x"),
        admin_password=SecretStr("a-real-admin-password"),
    )


def _repository_files() -> list[Path]:
    files = []
    for folder, dirs, names in os.walk(ROOT):
        # .git, .venv, the state dir and caches are not the repository's text.
        dirs[:] = [d for d in dirs if not d.startswith(".") and d != "__pycache__"]
        for name in names:
            path = Path(folder) / name
            if (
                path.suffix in TEXT_SUFFIXES or name.startswith(".env")
            ) and path.stat().st_size < 1_000_000:
                files.append(path)
    return files


def published_jwt_secrets() -> dict[str, str]:
    """Every literal JWT secret value in the repository's text files -> where it was found."""
    found: dict[str, str] = {}
    for path in _repository_files():
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        where = str(path.relative_to(ROOT))
        if path.suffix == ".py":
            for match in _PY_VALUE.finditer(text):
                found[match.group(2) * int(match.group(3) or 1)] = where
            continue
        for match in _TEXT_VALUE.finditer(text):
            value = match.group(1)
            if not value.startswith(("$", "{", "<")):  # a shell or template expansion, not a value
                found[value] = where
    return found


def test_every_jwt_secret_in_the_repository_is_refused_in_prod() -> None:
    found = published_jwt_secrets()
    # The scan works: it finds the deploy template's placeholder and the docs' elision.
    assert "REPLACE_ME_with_at_least_32_random_characters" in found and "..." in found, found
    accepted = {value: where for value, where in found.items() if jwt_secret_problem(value) is None}
    assert not accepted, (
        f"JWT secrets in the repository that TICKETFLOW_ENV=prod would accept: {accepted}"
    )


@pytest.mark.parametrize(
    "secret", sorted(PLACEHOLDER_SECRETS | {"CHANGEME", "x" * 48, "ab" * 20, "é" * 20})
)
def test_prod_refuses_published_and_non_random_secrets(secret: str) -> None:
    with pytest.raises(ValidationError, match="JWT_SECRET"):
        _prod(secret)


def test_prod_counts_bytes_not_characters() -> None:
    # 31 bytes of ASCII is too short; 31 characters of which some take two bytes in UTF-8 is not.
    short = secrets.token_hex(16)[:31]
    with pytest.raises(ValidationError, match="at least 32 bytes"):
        _prod(short)
    settings = _prod(short[:-1] + "éé")
    assert (
        settings.jwt_secret is not None
        and settings.jwt_secret.get_secret_value() == short[:-1] + "éé"
    )


def test_prod_requires_a_secret_and_accepts_a_random_one() -> None:
    with pytest.raises(ValidationError, match="JWT_SECRET"):
        _prod(None)
    assert _prod(secrets.token_urlsafe(32)).env == "prod"


def test_dev_accepts_any_secret() -> None:
    settings = Settings(_env_file=None, env="dev", jwt_secret=SecretStr("dev"))  # type: ignore[call-arg]
    assert (
        settings.jwt_secret is not None and settings.jwt_secret.get_secret_value() == "dev"
    )  # kept, not replaced


def test_cors_origins_are_parsed_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TICKETFLOW_CORS_ORIGINS", raising=False)
    assert Settings(_env_file=None).cors_origin_list == []  # type: ignore[call-arg]
    settings = Settings(
        _env_file=None, cors_origins=" https://app.example.com, http://localhost:5173 ,"
    )  # type: ignore[call-arg]
    assert settings.cors_origin_list == ["https://app.example.com", "http://localhost:5173"]
    with pytest.raises(ValidationError, match="CORS_ORIGINS"):
        Settings(_env_file=None, cors_origins="https://app.example.com/path")  # type: ignore[call-arg]
