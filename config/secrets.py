"""Which settings are secret, and how Ray's worker processes get them without Ray seeing them.

Ray records and shows whatever is handed to a worker: `runtime_env` (logged by the runtime-env
agent, shown on the dashboard per job and actor), actor and task arguments, Serve's deployment
config. So secrets never travel that way. A worker process reads them where it runs:

1. from its own environment: a local Ray's raylet is started by the driver and passes the
   driver's environment on to every worker it spawns; a cluster node gets them from what starts
   `ray start` there (a Kubernetes Secret as env on every pod, the cluster launcher's env file;
   deploy/README.md);
2. else from the secrets file the driver wrote into its state directory (mode 0600, readable
   only by the server's user), whose path (not a secret) is the one thing passed to the workers,
   as `TICKETFLOW_SECRETS_FILE`: this serves a Ray on the same machine that was started without
   the secrets (`RAY_ADDRESS` pointing at a `ray start --head` of its own).

The process's own environment wins over the file; a node that cannot read the file (another
machine) simply relies on its environment.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# Reading the file is part of reading settings (get_settings); the names live there, so that
# config.settings imports nothing of this module.
from config.settings import (
    SECRET_FIELDS,
    SECRETS_FILE_VAR,
    WORKER_SECRET_FIELDS,
    env_names,
    secrets_from_file,
)

SECRETS_FILE_NAME = "secrets.json"


def secret_env_names() -> frozenset[str]:
    return frozenset(name for field in SECRET_FIELDS for name in env_names(field))


def is_secret(env_name: str) -> bool:
    return env_name in secret_env_names()


def _plain(value: Any) -> str | None:
    if value is None:
        return None
    reveal = getattr(value, "get_secret_value", None)
    return str(reveal() if reveal is not None else value)


def worker_secrets(settings: Any) -> dict[str, str]:
    """The resolved secrets the workers need, by their first (canonical) variable name."""
    values = {env_names(f)[0]: _plain(getattr(settings, f)) for f in WORKER_SECRET_FIELDS}
    return {name: value for name, value in values.items() if value is not None}


def write_secrets_file(state_dir: Path, values: Mapping[str, str]) -> Path:
    """Writes the secrets to `<state_dir>/secrets.json`, readable by this user only (0600).

    Written beside and renamed into place, so a worker never reads half a file, and created
    0600 from the start, so the secrets are never readable by anyone else, not even briefly.
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / SECRETS_FILE_NAME
    partial = state_dir / f".{SECRETS_FILE_NAME}.{os.getpid()}"
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an older leftover keeps its mode through O_TRUNC
        os.write(fd, json.dumps(dict(values)).encode())
    finally:
        os.close(fd)
    os.replace(partial, path)
    return path.resolve()


__all__ = [
    "SECRETS_FILE_NAME",
    "SECRETS_FILE_VAR",
    "SECRET_FIELDS",
    "WORKER_SECRET_FIELDS",
    "env_names",
    "is_secret",
    "secret_env_names",
    "secrets_from_file",
    "worker_secrets",
    "write_secrets_file",
]
