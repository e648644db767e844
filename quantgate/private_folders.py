"""The key holder's own folders, which no row of the store may point quantgate into.

Where a run's, a logged model's or a version's files live is a row any store writer can rewrite.
quantgate already reads and writes there without following a link (``artifact_download``,
``artifact_log``), but a row can name a real folder too: the fiftieth adversarial run rewrote an
experiment's ``artifact_location`` to the key holder's state folder, and the key holder's
``promote`` made ``<run id>/artifacts/decision.json`` in it. So, after opening a local artifact
folder, quantgate asks the kernel where that open folder really is (``/proc/self/fd``: no name a
writer can swap in between) and refuses

- to write into the evidence key's folder or anywhere in the state folder (the block memory's);
- to read anything holding the key file or the state folder, or lying in the state folder.

Nothing a model needs lives in either.
"""

from __future__ import annotations

import os

from quantgate.block_memory import memory_file
from quantgate.evidence_signing import KEY_FILE_ENV


def _real(path: str) -> str:
    return os.path.realpath(os.path.expanduser(path))


def _key_file() -> str | None:
    named = os.environ.get(KEY_FILE_ENV)
    return _real(named) if named else None


def _state_folder() -> str:
    return _real(str(memory_file().parent))


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def open_path(fd: int) -> str:
    """Where the folder or file open as ``fd`` really is (Linux's ``/proc``, macOS's ``F_GETPATH``)."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        import fcntl

        if not hasattr(fcntl, "F_GETPATH"):
            raise
        return fcntl.fcntl(fd, fcntl.F_GETPATH, bytes(1024)).rstrip(b"\0").decode()


def write_problem(real: str) -> str | None:
    """Why quantgate must not make or write files in the folder ``real`` (a real path), or ``None``."""
    key = _key_file()
    if key and real == os.path.dirname(key):
        return "it is the folder of the evidence key"
    if _within(real, _state_folder()):
        return "it is in quantgate's state folder"
    return None


def read_problem(real: str) -> str | None:
    """Why quantgate must not read the folder or file ``real`` (a real path), or ``None``."""
    key = _key_file()
    if key and _within(key, real):
        return "it holds the evidence key file"
    state = _state_folder()
    if _within(state, real) or _within(real, state):
        return "it holds or lies in quantgate's state folder"
    return None
