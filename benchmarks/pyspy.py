"""Where inside a process the CPU goes: py-spy on the on-sale's busiest processes (optional).

py-spy is not a TicketFlow dependency: `pip install py-spy` into the benchmark's environment. It
samples each process from outside (`--nonblocking`: the process is never paused, so the samples
cost the profiled process nothing; py-spy's own CPU is not in any role's figure), here for
`seconds` starting two seconds into the booking phase, then this module reads its collapsed
stacks and keeps, per role, the functions most often on top of the stack ("self") and TicketFlow's
own functions most often anywhere on it ("inclusive").
"""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from benchmarks.common import log, markdown_table

# The roles worth looking inside (a process each, but the Gateway's may be several).
SPIED_ROLES = (
    "Serve replica (Gateway)",
    "ray::BookingSaga",
    "ray::SeatInventory",
    "ray::Notifier",
    "ray::PaymentGateway",
)
_OUR_PACKAGES = ("actors", "api", "application", "domain", "providers", "storage", "serve_app")
# A collapsed frame: `function (path/to/file.py:line)`; idle frames are dropped by --idle's absence.
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def py_spy_binary() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def short_frame(frame: str) -> str:
    """`lock_many (/x/actors/seat_inventory.py:120)` -> `lock_many (actors/seat_inventory.py)`."""
    m = _FRAME.match(frame)
    if not m:
        return frame
    file = m["file"]
    for marker in ("site-packages/", "/lib/python3"):
        if marker in file:
            file = file.split(marker, 1)[1]
            break
    else:
        parts = file.split("/")
        for i, part in enumerate(parts):
            if part in _OUR_PACKAGES or part.startswith("serve_app"):
                file = "/".join(parts[i:])
                break
    return f"{m['func']} ({file})"


def is_ours(frame: str) -> bool:
    m = _FRAME.match(frame)
    if not m or "site-packages" in m["file"]:
        return False
    return any(f"/{p}/" in m["file"] for p in _OUR_PACKAGES) or "serve_app" in m["file"]


def summarise(collapsed: str, top: int = 8) -> dict[str, Any]:
    """Self and inclusive counts from py-spy's collapsed (`--format raw`) output."""
    self_counts: Counter[str] = Counter()
    ours: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        self_counts[short_frame(frames[-1])] += count
        for frame in {short_frame(f) for f in frames if is_ours(f)}:
            ours[frame] += count
    return {
        "samples": total,
        "self": [(f, n) for f, n in self_counts.most_common(top)],
        "ours_inclusive": [(f, n) for f, n in ours.most_common(top)],
    }


class PySpy:
    """Records each of `SPIED_ROLES`' processes for `seconds` (concurrently) during the phase."""

    def __init__(self, *, seconds: float, out_dir: Path | None, delay: float = 2.0) -> None:
        self.seconds = seconds
        self.delay = delay
        self.out_dir = out_dir
        self.summary: dict[str, Any] = {}

    async def record(self, select: Callable[[], Mapping[int, str]]) -> None:
        binary = py_spy_binary()
        if binary is None:
            log("cpu_profile: py-spy is not installed (pip install py-spy); no stacks")
            return
        await asyncio.sleep(self.delay)
        targets = [(pid, role) for pid, role in select().items() if role in SPIED_ROLES]
        out_dir = self.out_dir or Path(tempfile.mkdtemp(prefix="tf-py-spy-"))
        out_dir.mkdir(parents=True, exist_ok=True)

        async def one(pid: int, role: str) -> None:
            path = out_dir / f"{role.replace(':', '').replace(' ', '_')}-{pid}.txt"
            proc = await asyncio.create_subprocess_exec(
                binary,
                "record",
                "--nonblocking",
                "--format",
                "raw",
                "--rate",
                "100",
                "--duration",
                str(max(1, int(self.seconds))),
                "--output",
                str(path),
                "--pid",
                str(pid),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            await proc.wait()
            if path.exists():
                self.summary[f"{role} (pid {pid})"] = summarise(path.read_text())

        await asyncio.gather(*(one(pid, role) for pid, role in targets))
        if self.out_dir is None:
            shutil.rmtree(out_dir, ignore_errors=True)

    @staticmethod
    def markdown(summary: Mapping[str, Any]) -> str:
        parts = []
        for name, s in sorted(summary.items()):
            total = max(1, s["samples"])
            rows = [("self", short, f"{100 * n / total:.0f} %") for short, n in s["self"]]
            rows += [
                ("ours, inclusive", f, f"{100 * n / total:.0f} %") for f, n in s["ours_inclusive"]
            ]
            parts.append(
                f"#### {name}: {s['samples']} samples\n\n"
                + markdown_table(["kind", "function", "share of samples"], rows)
            )
        return "\n\n".join(parts) + "\n"
