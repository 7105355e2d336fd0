"""CPU time of processes, read from /proc, and which part of TicketFlow each process is.

`benchmarks.cpu_profile` samples the server's processes (Ray's actors, the Gateway replica, raylet,
GCS, HAProxy...), the Postgres backends of its database and the load generator at the start and
the end of an on-sale's booking phase, and divides the difference by the confirmed bookings.
CPU time (utime + stime, `/proc/<pid>/stat` fields 14 and 15) rather than wall time, so that the
figures mean something on a machine that other work shares; contention still inflates them
somewhat (cache misses, more context switches), so compare before and after in one sitting.

Linux only (it reads /proc).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
PROC = Path("/proc")

# Roles reported in this order (the rest after them, by CPU); names as `role_of` gives them.
ROLE_ORDER = (
    "Serve replica (Gateway)",
    "ray::BookingSaga",
    "postgres backends",
    "ray::SeatInventory",
    "ray::Notifier",
    "ray::PaymentGateway",
    "haproxy",
    "load generator",
)
PG_BACKENDS = "postgres backends"
PG_SHARED = "postgres background (shared)"
LOAD_GENERATOR = "load generator"

# Postgres's own processes (not backends); they serve every database of the server, so other
# work on the machine shows in them too.
_PG_AUXILIARY = (
    "checkpointer",
    "background writer",
    "walwriter",
    "autovacuum",
    "logical replication",
    "stats collector",
    "archiver",
    "walsender",
    "walreceiver",
    "io worker",
    "walsummarizer",
)


@dataclass(frozen=True)
class ProcStat:
    """One reading of one process."""

    pid: int
    ppid: int
    start_ticks: int  # since boot; with the pid, a process's identity (pids are reused)
    cpu_ticks: int  # user + system time so far


def parse_stat(text: str, pid: int) -> ProcStat:
    """Reads the fields of `/proc/<pid>/stat` this module needs.

    The command name (field 2) is in parentheses and may itself contain spaces or parentheses, so
    the fields are counted from the last ')'.
    """
    rest = text[text.rindex(")") + 2 :].split()
    # rest[0] is field 3 (state): field n is rest[n - 3].
    return ProcStat(
        pid=pid,
        ppid=int(rest[1]),
        start_ticks=int(rest[19]),
        cpu_ticks=int(rest[11]) + int(rest[12]),
    )


def read_stat(pid: int) -> ProcStat | None:
    try:
        return parse_stat((PROC / str(pid) / "stat").read_text(), pid)
    except (OSError, ValueError, IndexError):
        return None  # gone meanwhile


def read_cmdline(pid: int) -> str:
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def read_environ_has(pid: int, entry: bytes) -> bool:
    try:
        return entry in (PROC / str(pid) / "environ").read_bytes().split(b"\0")
    except OSError:
        return False


def all_pids() -> list[int]:
    return [int(p) for p in os.listdir(PROC) if p.isdigit()]


def role_of(cmdline: str) -> str:
    """The part of TicketFlow (or Ray, or the machine) a server process plays, from its command line.

    Ray names a worker's process after its actor class (`ray::SeatInventory`), with the method it
    is running appended while it runs one (`ray::SeatInventory.lock_many`): the method is dropped.
    """
    if cmdline.startswith("ray::"):
        name = cmdline[5:].split(" ", 1)[0].split(".", 1)[0]
        if name.startswith("ServeReplica:"):
            return f"Serve replica ({name.rsplit(':', 1)[-1]})"
        return f"ray::{name}" if name else "ray::(worker)"
    args = cmdline.split()
    if not args:
        return "other"
    program = args[0].rsplit("/", 1)[-1]
    if program == "haproxy" or "haproxy" in program:
        return "haproxy"
    if program in ("raylet", "gcs_server"):
        return f"ray: {program}"
    if program == "ticketflow":
        return "ticketflow serve (Ray driver)"
    if program.startswith("python"):
        return _python_role(args[1:])
    return program


def _python_role(args: list[str]) -> str:
    for i, arg in enumerate(args):
        if arg == "-c":
            return "python -c"
        if arg == "-m":
            module = args[i + 1] if i + 1 < len(args) else ""
            return "ticketflow serve (Ray driver)" if module == "cli" else f"python -m {module}"
        if not arg.startswith("-"):
            base = arg.rsplit("/", 1)[-1].removesuffix(".py")
            for name in ("dashboard", "agent", "log_monitor", "monitor", "runtime_env"):
                if name in base:
                    return f"ray: {base}"
            return f"python {base}"
    return "python"


def postgres_role(cmdline: str, database: str | None) -> str | None:
    """A Postgres process's role: a backend of `database` (any database when None), one of the
    server's own background processes, or None (a backend of another database: not ours).

    Backends are titled `postgres: [<cluster>: ]<user> <database> <client> <activity>`.
    """
    if not cmdline.startswith("postgres:"):
        return None
    words = cmdline[len("postgres:") :].split()
    if words and words[0].endswith(":"):  # the cluster name (`15/main:`), when one is set
        words = words[1:]
    title = " ".join(words)
    if any(title.startswith(aux) for aux in _PG_AUXILIARY):
        return PG_SHARED
    if len(words) < 2:
        return None
    if database is None or words[1] == database:
        return PG_BACKENDS
    return None


@dataclass
class _Seen:
    role: str
    first_ticks: int  # CPU at the first reading in the phase (0 for a process born in it)
    last_ticks: int


@dataclass
class CpuProfile:
    """CPU seconds per role over one phase, and the machine's."""

    seconds: float  # wall time of the phase
    by_role: dict[str, float]  # role -> CPU seconds
    processes: dict[str, int]  # role -> processes seen
    machine_busy_s: float  # every CPU of the machine, busy time over the phase
    cpus: int
    sampler_s: float  # this module's own CPU (in the load generator's process), already deducted

    @property
    def total_s(self) -> float:
        return sum(self.by_role.values())

    def per_booking_ms(self, confirmed: int) -> dict[str, float]:
        if confirmed <= 0:
            return {}
        return {role: 1000.0 * s / confirmed for role, s in self.by_role.items()}

    def ordered_roles(self) -> list[str]:
        known = [r for r in ROLE_ORDER if r in self.by_role]
        rest = sorted(
            (r for r in self.by_role if r not in ROLE_ORDER), key=lambda r: -self.by_role[r]
        )
        return known + rest


def machine_busy_ticks() -> int:
    """Busy time of every CPU since boot (the first line of /proc/stat, less idle and iowait)."""
    fields = [int(v) for v in (PROC / "stat").read_text().split("\n", 1)[0].split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is already in user)
    return sum(fields[:8]) - fields[3] - fields[4]


def boot_ticks_now() -> int:
    return int(float((PROC / "uptime").read_text().split()[0]) * CLK_TCK)


@dataclass
class PhaseSampler:
    """Follows a set of processes through a phase: `begin()`, `sample()` now and then (so that
    processes which exit before `end()` are counted up to their last reading, and short-lived ones
    at all), `end()`.

    `select` returns the processes in scope, pid -> role; it is called at every sample.
    """

    select: Callable[[], Mapping[int, str]]
    _seen: dict[tuple[int, int], _Seen] = field(default_factory=dict)
    _begin_boot_ticks: int = 0
    _begin_wall: float = 0.0
    _begin_busy: int = 0
    _own: float = 0.0

    def begin(self) -> None:
        self._seen.clear()
        self._own = 0.0
        self._begin_boot_ticks = boot_ticks_now()
        self._begin_wall = time.perf_counter()
        self._begin_busy = machine_busy_ticks()
        self.sample(first=True)

    def sample(self, *, first: bool = False) -> None:
        started = time.process_time()
        for pid, role in self.select().items():
            stat = read_stat(pid)
            if stat is None:
                continue
            key = (pid, stat.start_ticks)
            seen = self._seen.get(key)
            if seen is None:
                # Born during the phase: all its CPU is the phase's. Seen late but older than the
                # phase (it entered the scope only now): only what it used from now on.
                born_in_phase = not first and stat.start_ticks >= self._begin_boot_ticks
                self._seen[key] = _Seen(
                    role, 0 if born_in_phase else stat.cpu_ticks, stat.cpu_ticks
                )
            else:
                seen.last_ticks = stat.cpu_ticks
                seen.role = role  # a Ray worker's title names its actor once it has one
        self._own += time.process_time() - started

    def end(self) -> CpuProfile:
        self.sample()
        wall = time.perf_counter() - self._begin_wall
        busy = machine_busy_ticks() - self._begin_busy
        by_role: dict[str, float] = {}
        processes: dict[str, int] = {}
        for seen in self._seen.values():
            used = (seen.last_ticks - seen.first_ticks) / CLK_TCK
            by_role[seen.role] = by_role.get(seen.role, 0.0) + used
            processes[seen.role] = processes.get(seen.role, 0) + 1
        if LOAD_GENERATOR in by_role:  # the sampler runs in the load generator's process
            by_role[LOAD_GENERATOR] = max(0.0, by_role[LOAD_GENERATOR] - self._own)
        return CpuProfile(
            seconds=wall,
            by_role=by_role,
            processes=processes,
            machine_busy_s=busy / CLK_TCK,
            cpus=os.cpu_count() or 1,
            sampler_s=self._own,
        )


def descendants(root: int, stats: Iterable[ProcStat]) -> set[int]:
    """`root` and every process below it."""
    children: dict[int, list[int]] = {}
    for s in stats:
        children.setdefault(s.ppid, []).append(s.pid)
    found, todo = {root}, [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found
