"""Free loopback ports for the servers TicketFlow starts, and how a lost race for one is recognised."""

from __future__ import annotations

import random
import socket
from pathlib import Path

# A server start that loses its port to another process between our check and its bind is
# retried on another port this many times; these lines in its log say it lost that race.
PORT_ATTEMPTS = 3
BIND_ERRORS = ("Address already in use", "could not bind", "could not create any TCP/IP sockets")
# Above Ray's default worker ports (10002-19999), below Serve's direct-ingress ports (30000-31000)
# and the usual ephemeral range (32768-).
_UNCONTENDED_PORTS = (20000, 30000)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago, outside the kernel's ephemeral range.

    Port 0 would hand out an ephemeral port, and Ray binds dozens of those (gRPC servers,
    object managers, agents) while it starts: a port chosen that way before `ray.init` can
    be taken before Serve binds it. Ray's worker ports sit at 10002-19999 and Serve's replicas
    take direct-ingress ports from 30000, so the ports here come from between the two.
    """
    low, high = _UNCONTENDED_PORTS[0], min(_UNCONTENDED_PORTS[1], _ephemeral_floor())
    for _ in range(200):
        port = random.randrange(low, high)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        fallback: int = sock.getsockname()[1]
        return fallback


def port_in_use(host: str, port: int) -> bool:
    """Whether something listens on ``host:port`` (a bind test, as the server itself will try).

    SO_REUSEADDR, as servers set it: a port whose last connections wait in TIME_WAIT (a server
    just stopped) is free, one that a process listens on is not.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def _ephemeral_floor() -> int:
    try:
        floor = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return _UNCONTENDED_PORTS[1]
    return floor if floor > _UNCONTENDED_PORTS[0] + 1000 else _UNCONTENDED_PORTS[1]
