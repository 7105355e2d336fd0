"""What every benchmark shares: default service URLs, statistics, a progress line, a free port.

The benchmarks are a client-side tool, not part of the server: they read `DATABASE_URL` and
`REDIS_URL` only as defaults for their own command-line options.
"""

from __future__ import annotations

import asyncio
import math
import os
import resource
import secrets
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"
REDIS_PREFIX = "tf:bench:"
SCHEMA_PREFIX = "tf_bench_"

_T = TypeVar("_T")


def default_database_url() -> str:
    return os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL


def default_redis_url() -> str:
    return os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL


def new_schema_name(kind: str) -> str:
    """A schema of our own per run and component (`tf_bench_<kind>_<hex>`), dropped afterwards."""
    return f"{SCHEMA_PREFIX}{kind}_{secrets.token_hex(4)}"


def run_async(coro: Awaitable[_T]) -> _T:
    """Runs a coroutine on uvloop when it is installed (a cheaper client), else on asyncio."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)  # type: ignore[arg-type]
    return uvloop.run(coro)  # type: ignore[arg-type]


# -- statistics ---------------------------------------------------------------------------------
def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (q in 0..100)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def latency_summary(seconds: Iterable[float]) -> dict[str, float | int | None]:
    """p50/p95/p99/mean/max in milliseconds (None when there is no sample) and the sample count."""
    values = sorted(seconds)
    if not values:
        return {"n": 0, "p50": None, "p95": None, "p99": None, "mean": None, "max": None}
    ms = [v * 1000 for v in values]
    return {
        "n": len(ms),
        "p50": round(percentile(ms, 50), 2),
        "p95": round(percentile(ms, 95), 2),
        "p99": round(percentile(ms, 99), 2),
        "mean": round(sum(ms) / len(ms), 2),
        "max": round(ms[-1], 2),
    }


async def cancel_and_wait(task: asyncio.Future[Any]) -> None:
    """Cancels `task` and waits until it has ended."""
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass


def timeline(
    at: Sequence[float], seconds: Sequence[float], window: float
) -> list[dict[str, float | int | None]]:
    """`latency_summary` of the samples in each `window` seconds of `at` (when each was taken),
    from the first window on: `start_s` is the window's start."""
    windows: dict[int, list[float]] = {}
    for t, value in zip(at, seconds, strict=True):
        windows.setdefault(int(t // window), []).append(value)
    return [
        {"start_s": round(k * window, 1), **latency_summary(windows[k])} for k in sorted(windows)
    ]


def burstiness(at: Sequence[float], bin_seconds: float) -> dict[str, float | int | None]:
    """How bunched events at times `at` came: their counts per `bin_seconds` from the first to the
    last, the counts' mean, max, and variance over mean (1 for arrivals at random, 0 for evenly
    spaced ones, above 1 for bursts)."""
    if not at:
        return {"bins": 0, "mean": None, "max": None, "dispersion": None}
    first = min(at)

    def bin_of(t: float) -> int:
        # The epsilon keeps a time on a bin's edge in that bin despite the float's rounding.
        return int((t - first) / bin_seconds + 1e-9)

    counts = [0] * (bin_of(max(at)) + 1)
    for t in at:
        counts[bin_of(t)] += 1
    mean = sum(counts) / len(counts)
    variance = sum((c - mean) ** 2 for c in counts) / len(counts)
    return {
        "bins": len(counts),
        "mean": round(mean, 2),
        "max": max(counts),
        "dispersion": round(variance / mean, 2) if mean else None,
    }


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0 or math.isnan(a) or math.isnan(b):
        return None
    return a / b


def fmt(value: Any, digits: int = 1) -> str:
    """Compact number formatting for the markdown tables."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}".replace(",", " ")
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if abs(value) >= 1000:
            return f"{value:,.0f}".replace(",", " ")
        return f"{value:.{digits}f}"
    return str(value)


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


# -- the client's own cost ------------------------------------------------------------------------
@dataclass
class CpuMeter:
    """This process's CPU time over a phase: tells whether the load generator itself saturated."""

    wall_start: float = 0.0
    cpu_start: float = 0.0

    def start(self) -> None:
        self.wall_start = time.perf_counter()
        self.cpu_start = _cpu_seconds()

    def stop(self) -> dict[str, float]:
        wall = time.perf_counter() - self.wall_start
        cpu = _cpu_seconds() - self.cpu_start
        return {
            "client_cpu_s": round(cpu, 2),
            "client_cpu_util": round(cpu / wall, 2) if wall > 0 else 0.0,
        }


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- progress -------------------------------------------------------------------------------------
class Progress:
    """One live status line on stderr, redrawn in place with a carriage return (no dependency)."""

    def __init__(self, *, enabled: bool | None = None, interval: float = 0.25) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.interval = interval
        self._task: asyncio.Task[None] | None = None
        self._width = 0

    def start(self, render: Callable[[], str]) -> None:
        if self.enabled:
            self._task = asyncio.get_running_loop().create_task(self._loop(render))

    async def _loop(self, render: Callable[[], str]) -> None:
        while True:
            self.draw(render())
            await asyncio.sleep(self.interval)

    def draw(self, line: str) -> None:
        if not self.enabled:
            return
        pad = max(0, self._width - len(line))
        self._width = len(line)
        sys.stderr.write("\r" + line + " " * pad)
        sys.stderr.flush()

    async def stop(self, final: Callable[[], str] | None = None) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        if self.enabled:
            if final is not None:
                self.draw(final())
            sys.stderr.write("\n")
            sys.stderr.flush()


def bar(fraction: float, width: int = 24) -> str:
    fraction = min(max(fraction, 0.0), 1.0)
    filled = round(fraction * width)
    return "[" + "#" * filled + "." * (width - filled) + "]"


def log(message: str) -> None:
    """Phase messages go to stderr, so stdout carries only the results."""
    print(message, file=sys.stderr, flush=True)
