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
    """The local folders a tracking URI writes to: a sqlite file's folder, a file store's root."""
    parsed = urlparse(tracking_uri)
    if parsed.scheme == "sqlite" and parsed.path not in ("", "/:memory:"):
        # sqlite:///rel.db is relative to the working folder, sqlite:////abs.db absolute
        return [Path(unquote(parsed.path)[1:]).resolve().parent]
    if parsed.scheme in ("", "file"):
        return [Path(unquote(parsed.path)).resolve()]
    return []


def replace_problem(path: Path, store: list[Path]) -> str | None:
    """Why someone other than this user (or root) could replace ``path`` (``None``: no one can):
    it lies inside one of the ``store`` folders, or it or a folder above it belongs to another
    user or is writable by group or others (a sticky folder, like /tmp, lets no one replace
    another's file)."""
    real = path.resolve()
    for folder in store:
        if real.is_relative_to(folder):
            return f"it lies in {folder}, the tracking store's folder, which every store writer can write"
    me = os.getuid()
    for item in (real, *real.parents):
        st = item.stat()
        if st.st_uid not in (me, 0):
            return f"{item} belongs to another user (uid {st.st_uid})"
        sticky = item.is_dir() and st.st_mode & stat.S_ISVTX
        if st.st_mode & 0o022 and not sticky:
            return f"{item} is writable by group or others (mode {st.st_mode & 0o777:o})"
    return None
