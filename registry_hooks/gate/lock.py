"""The promotion lock: one gate at a time moves an alias.

Why: MLflow's registry has no compare-and-set. Setting an alias and moving the stage are
separate calls, and ``transition_model_version_stage(archive_existing_versions=True)`` is not
atomic across processes either. Measured on a sqlite store with ten gates started at once and
no lock, 6 rounds in 10 ended with several versions in stage Staging, or with the alias on a
version that was not in Staging at all.

What: an exclusive ``flock`` on the lock file's folder, held while the alias and stage move and
are read back (and, briefly, while a note is appended to a version description); the file names
the holder. For a ``sqlite:///`` registry the default lock file is ``<database>.promote.lock``
beside the database: every process that can write that registry opens the database file itself
(SQLite has no server), so it can open that folder too, and the lock covers every gate. The
folder, not the file: a file can be renamed over by anyone who can write its folder (two gates
then hold locks on two files), the folder only by whoever can write the one above. Lock files
in one folder share one lock. The kernel drops a ``flock`` when its process exits, so a crashed
gate leaves no stale lock.

Across machines (a tracking server, ``http://``): a file lock only protects one host, so there
the lock is a PostgreSQL **session advisory lock** (``pg_try_advisory_lock``) taken through a
direct connection to a PostgreSQL database every gate can reach - the tracking server's own
backend database (``deploy/stack`` prints it as ``QUANTGATE_LOCK_URI``), or ``--lock-uri``.
PostgreSQL itself guarantees one holder; the lock belongs to the connection, so a gate that
crashes or loses its connection releases it (no stale lock). A ``postgresql://`` registry used
directly (no server in between) gets this lock on its own database by default.

Scope (honest limits):

* It excludes other quantgate gates, not programs that call ``set_registered_model_alias``
  directly. ``promote`` reads the registry back after writing and fails loudly when what it
  finds is not what it wrote.
* A tracking server with neither ``--lock-uri``/``$QUANTGATE_LOCK_URI`` nor ``--lock-file``
  is promoted unlocked with a warning; ``--no-lock`` silences it where gates never run at once
  (e.g. one CI job, or the webhook receiver's single worker). Unlocked, the read-back still
  detects an interleaving but does not repair it: concurrent repairs would fight each other
  (measured: with no lock and repairs on, 9 rounds in 10 ended inconsistent).
* If the lock's database connection drops while a gate holds it, PostgreSQL releases the lock
  at once; the read-back after writing is what catches an interleaving then.
* ``flock`` needs a POSIX system (Linux, macOS).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import socket
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from quantgate.errors import UserError


class LockTimeout(TimeoutError, UserError):
    """Another gate held the promotion lock for longer than we were willing to wait."""


LockTarget = Path | str | None  # a lock file, a postgresql:// URI, or no lock
# One advisory-lock key for every quantgate gate on a database (64-bit, signed as PostgreSQL wants).
ADVISORY_KEY = int.from_bytes(hashlib.sha256(b"quantgate.promote").digest()[:8], "big", signed=True)


def is_pg_uri(target: object) -> bool:
    return isinstance(target, str) and target.split("://", 1)[0].split("+", 1)[0] in ("postgresql", "postgres")


def libpq_uri(uri: str) -> str:
    """``postgresql+psycopg://…`` (SQLAlchemy's spelling, as in MLflow store URIs) to plain libpq ``postgresql://…``."""
    scheme, rest = uri.split("://", 1)
    return f"{scheme.split('+', 1)[0]}://{rest}"


def resolve_lock(
    registry_uri: str,
    *,
    lock_file: str | None = None,
    lock_uri: str | None = None,
    no_lock: bool = False,
    warn: Callable[[str], None] | None = None,
) -> LockTarget:
    """The lock every gate of this registry shares; ``None`` promotes unlocked (with a warning).

    In order: ``no_lock``; ``lock_uri`` (a PostgreSQL advisory lock, what a tracking server
    needs); ``lock_file``; a ``postgresql://`` registry's own database; a file beside a sqlite
    registry; otherwise none.
    """
    if no_lock:
        return None
    if lock_uri:
        if not is_pg_uri(lock_uri):
            from quantgate.errors import UserError

            raise UserError(f"--lock-uri must be a postgresql:// URI, got {lock_uri.split('://', 1)[0]}://…")
        return lock_uri
    if lock_file:
        return Path(lock_file)
    if is_pg_uri(registry_uri):
        return registry_uri
    path = default_lock_path(registry_uri)
    if path is None and warn:
        warn(
            f"warning: no promotion lock for registry {registry_uri!r} (sqlite and postgresql registries get one by "
            "default); concurrent gates could interleave. Pass --lock-uri postgresql://… (a database every gate "
            "reaches; deploy/stack prints QUANTGATE_LOCK_URI), --lock-file PATH on storage every gate shares, "
            "or --no-lock to say gates never run at once."
        )
    return path


def describe_lock(target: LockTarget) -> str:
    """For messages: never print a password."""
    if target is None:
        return "no lock"
    if is_pg_uri(target):
        from sqlalchemy.engine import make_url as _url

        return f"PostgreSQL advisory lock on {_url(libpq_uri(str(target))).render_as_string(hide_password=True)}"
    return f"flock on {target}"


@contextlib.contextmanager
def pg_advisory_lock(uri: str, *, timeout_s: float = 300.0, poll_s: float = 0.05) -> Iterator[None]:
    """A session advisory lock on a dedicated connection, held for the block.

    PostgreSQL grants it to one session at a time, on any machine; closing the connection
    (or the process dying) releases it.
    """
    import psycopg

    me = f"quantgate-promote pid {os.getpid()} on {socket.gethostname()}"
    try:
        conn = psycopg.connect(libpq_uri(uri), autocommit=True, connect_timeout=10, application_name=me[:63])
    except psycopg.OperationalError as exc:
        from quantgate.errors import UserError

        raise UserError(
            f"cannot reach the promotion lock's database ({describe_lock(uri)}): {' '.join(str(exc).split())[:200]}"
        ) from None
    with conn:
        deadline = time.monotonic() + timeout_s
        while not conn.execute("SELECT pg_try_advisory_lock(%s)", (ADVISORY_KEY,)).fetchone()[0]:
            if time.monotonic() > deadline:
                row = conn.execute(
                    "SELECT a.application_name, a.client_addr FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
                    "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s::oid AND l.objid = %s::oid "
                    "AND l.objsubid = 1 LIMIT 1",
                    ((ADVISORY_KEY >> 32) & 0xFFFFFFFF, ADVISORY_KEY & 0xFFFFFFFF),
                ).fetchone()
                holder = f" by {row[0] or 'a session'} from {row[1] or 'a local socket'}" if row else ""
                raise LockTimeout(
                    f"promotion lock ({describe_lock(uri)}) still held after {timeout_s:g}s{holder}; "
                    "another gate is promoting. Try again, or check that process."
                )
            time.sleep(poll_s)
        try:
            yield
        finally:
            if not conn.closed:
                conn.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_KEY,))


def default_lock_path(registry_uri: str) -> Path | None:
    """``<database>.promote.lock`` beside a sqlite registry; ``None`` for any other store."""
    if not registry_uri.startswith("sqlite:"):
        return None
    try:
        database = make_url(registry_uri).database
    except ArgumentError:
        return None
    if not database or database == ":memory:":
        return None
    return Path(database).expanduser().resolve().with_name(Path(database).name + ".promote.lock")


@contextlib.contextmanager
def promotion_lock(path: LockTarget, *, timeout_s: float = 300.0, poll_s: float = 0.02) -> Iterator[LockTarget]:
    """Hold the promotion lock for the duration of the block: an exclusive ``flock`` on a file
    (a ``Path``), a PostgreSQL advisory lock (a ``postgresql://`` URI string), or nothing (``None``).

    Polls without blocking so a stuck holder ends in a clear ``LockTimeout`` rather than a hang.
    """
    if path is None:
        yield None
        return
    if is_pg_uri(path):
        with pg_advisory_lock(str(path), timeout_s=timeout_s, poll_s=poll_s):
            yield path
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _open_lock_file(path)
    # The lock is on the file's folder; the file only names the holder. A file can be renamed
    # over by anyone who can write its folder, which with the default lock is the store's: the
    # thirty-eighth adversarial run renamed a fresh file over a held lock file, and up to three
    # gates were inside at once. Renaming the folder itself needs write access to the one above.
    folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(folder, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    holder = _read_holder(fd)
                    raise LockTimeout(
                        f"promotion lock {path} still held after {timeout_s:g}s{f' by {holder}' if holder else ''}; "
                        "another gate is promoting. Try again, or check that process."
                    ) from None
                time.sleep(poll_s)
        os.ftruncate(fd, 0)  # who holds it, for the timeout message above
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        yield path
    finally:
        fcntl.flock(folder, fcntl.LOCK_UN)  # no-op when we never acquired it
        os.close(folder)
        os.close(fd)


def _open_lock_file(path: Path) -> int:
    """Open (or create) the lock file itself, never what a link there points at: the gate writes
    its pid into it, and whoever can write the database's folder can put a link there (the
    eighteenth adversarial run pointed it at the evidence key file, which one ``promote`` then
    replaced with a guessable ``pid N on host``). A symlink, a file with other hard links, or
    anything but a plain file is refused in one line, and nothing is written."""
    refusal = (
        f"promotion lock {path} is {{}}; the gate never writes through one: remove it "
        "(the gate creates a plain file) and check who put it there"
    )
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o644)
    except OSError as exc:
        if path.is_symlink():
            raise UserError(refusal.format("a symbolic link")) from None
        raise UserError(f"cannot open promotion lock {path}: {exc.strerror}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        os.close(fd)
        kind = "a file with other names (hard links)" if stat.S_ISREG(info.st_mode) else "not a plain file"
        raise UserError(refusal.format(kind))
    return fd


def _read_holder(fd: int) -> str:
    """Who holds the lock, from the file this gate opened (as itself, see :func:`_open_lock_file`),
    never read again by name: the thirty-ninth adversarial run swapped the name for a link to the
    evidence key file while a gate waited, and the timeout message quoted the key. A holder line
    is short; more is not one."""
    try:
        text = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    except OSError:
        return ""
    return text if text.startswith("pid ") and "\n" not in text else ""
