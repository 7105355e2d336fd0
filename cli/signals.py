"""SIGTERM and SIGINT ask `ticketflow serve` to stop; they never interrupt it mid-step."""

from __future__ import annotations

import signal
import threading


def on_stop_signals(stop: threading.Event) -> None:
    """Set ``stop`` on SIGTERM or SIGINT (again after Ray installed handlers of its own)."""
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
