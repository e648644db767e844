"""The promotion lock: one gate at a time moves an alias.

Why: MLflow's registry has no compare-and-set. Setting an alias and moving the stage are
separate calls, and ``transition_model_version_stage(archive_existing_versions=True)`` is not
atomic across processes either. Measured on a sqlite store with ten gates started at once and
no lock, 6 rounds in 10 ended with several versions in stage Staging, or with the alias on a
version that was not in Staging at all.

What: an exclusive ``flock`` on a file, held while the alias and stage move and are read back
(and, briefly, while a note is appended to a version description). For a ``sqlite:///``
registry the default lock file is ``<database>.promote.lock`` beside the database: every process that can write that registry opens the database file itself
(SQLite has no server), so it can open this file too, and the lock covers every gate. The
kernel drops a ``flock`` when its process exits, so a crashed gate leaves no stale lock.

Scope (honest limits):

* It excludes other quantgate gates, not programs that call ``set_registered_model_alias``
  directly. ``promote`` reads the registry back after writing and fails loudly when what it
  finds is not what it wrote.
* A tracking server (``http://``) or a database server has no file every writer shares, so
  there ``promote`` runs unlocked and warns, unless given ``--lock-file PATH`` (or
  ``$QUANTGATE_PROMOTE_LOCK``) on storage all gates share (one host, or a network filesystem
  with working ``flock``); ``--no-lock`` silences the warning where gates never run at once
  (e.g. one CI job, or the webhook receiver's single worker). Unlocked, the read-back still
  detects an interleaving but does not repair it: concurrent repairs would fight each other
  (measured: with no lock and repairs on, 9 rounds in 10 ended inconsistent).
* ``flock`` needs a POSIX system (Linux, macOS).
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError


class LockTimeout(TimeoutError):
    """Another gate held the promotion lock for longer than we were willing to wait."""


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
def promotion_lock(path: Path | None, *, timeout_s: float = 300.0, poll_s: float = 0.02) -> Iterator[Path | None]:
    """Hold an exclusive lock on ``path`` for the duration of the block (no-op for ``None``).

    Polls with a non-blocking ``flock`` so a stuck holder ends in a clear ``LockTimeout``
    rather than a hang.
    """
    if path is None:
        yield None
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    holder = _read_holder(path)
                    raise LockTimeout(
                        f"promotion lock {path} still held after {timeout_s:g}s{f' by {holder}' if holder else ''}; "
                        "another gate is promoting. Try again, or check that process."
                    ) from None
                time.sleep(poll_s)
        os.ftruncate(fd, 0)  # who holds it, for the timeout message above
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        yield path
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)  # no-op when we never acquired it
        os.close(fd)


def _read_holder(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError:
        return ""
