"""Whether a file a key holder names (a thresholds file) could be replaced by someone else.

With an evidence key, quantgate's threat is a store writer: another user who can write the
tracking store, its folder included. A file in that folder, or one whose folders another user
can write, can be replaced between two reads (a rename needs only write access to the folder):
the thirty-third adversarial run renamed a lenient thresholds file over the key holder's
``strict.yaml`` beside ``mlflow.db``, and the gate passed what it had rejected. Pure file checks.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from urllib.parse import unquote, urlparse


def store_folders(tracking_uri: str) -> list[Path]:
    """The local folders a tracking URI writes to: a sqlite file's folder, a file store's root,
    each as named and as resolved (the thirty-eighth adversarial run moved ``mlflow.db`` into a
    subfolder behind a link, and the folder the URI names was no longer the store's)."""
    parsed = urlparse(tracking_uri)
    if parsed.scheme == "sqlite" and parsed.path not in ("", "/:memory:"):
        # sqlite:///rel.db is relative to the working folder, sqlite:////abs.db absolute
        database = Path(os.path.abspath(unquote(parsed.path)[1:]))
        return _both(database.parent) + [database.resolve().parent]
    if parsed.scheme in ("", "file"):
        return _both(Path(os.path.abspath(unquote(parsed.path))))
    return []


def _both(path: Path) -> list[Path]:
    return [path, path.resolve()]


def replace_problem(path: Path, store: list[Path]) -> str | None:
    """Why someone other than this user (or root) could replace ``path`` (``None``: no one can):
    it, or a link on the way to it, lies inside one of the ``store`` folders, or it or a folder
    above it (as named, and as resolved) belongs to another user or is writable by group or
    others (a sticky folder, like /tmp, lets no one replace another's file). A link is as safe as
    the folder it lies in: the thirty-eighth adversarial run re-pointed a link in the store's
    folder that named the key holder's own file."""
    named = Path(os.path.abspath(path))
    real = named.resolve()
    for item in (named, real):
        for folder in store:
            if item.is_relative_to(folder):
                return f"{item} lies in {folder}, the tracking store's folder, which every store writer can write"
    me = os.getuid()
    for item in dict.fromkeys((named, *named.parents, real, *real.parents)):
        if item.is_symlink():
            continue  # a link cannot be written, only replaced: its folder, checked too, says who can
        st = item.stat()
        if st.st_uid not in (me, 0):
            return f"{item} belongs to another user (uid {st.st_uid})"
        sticky = item.is_dir() and st.st_mode & stat.S_ISVTX
        if st.st_mode & 0o022 and not sticky:
            return f"{item} is writable by group or others (mode {st.st_mode & 0o777:o})"
    return None
