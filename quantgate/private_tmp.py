"""A temporary folder of the process's own, for everything that writes to ``$TMPDIR`` by name.

Libraries quantgate runs write fixed names in the temporary folder: importing ONNX Runtime
(1.31, its telemetry) reads ``$TMPDIR/.ses`` and, finding other content there, rewrites it
opened with ``O_TRUNC`` and following links. In a shared ``/tmp`` a store writer who plants a
link at that name has the key holder's ``evaluate``, ``serve`` or ``score`` write over a file
of the key holder's: the forty-eighth adversarial run pointed it at the description-block
memory, which lost every seal it held, and the next ``evaluate`` rewrote a person's quote of an
older block as its own.

So every quantgate process works in a folder of its own: made by ``mkdtemp`` (a random name,
mode 0700) inside the temporary folder it was given, named in ``$TMPDIR`` and ``tempfile`` for
the process and everything it starts (the serving workers, Spark's Python workers), and removed
when the process exits (not after ``kill -9``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from multiprocessing.util import Finalize

_OWN: list[str] = []


def use_private_tmpdir() -> str:
    """Point ``$TMPDIR`` and ``tempfile`` at a new 0700 folder (once per process); return it."""
    if _OWN and os.environ.get("TMPDIR") == _OWN[0]:
        return _OWN[0]
    folder = tempfile.mkdtemp(prefix="quantgate-")
    _OWN[:] = [folder]
    os.environ["TMPDIR"] = folder
    tempfile.tempdir = folder
    # removed last: multiprocessing removes its own folder in there (pymp-*, exit priority -100)
    # in its exit handler, so the removal is a finalizer of that handler's, after everything else
    Finalize(None, _remove, args=(folder, os.getpid()), exitpriority=-1000)
    return folder


def _remove(folder: str, pid: int) -> None:
    if os.getpid() == pid:  # not in a forked child, whose parent still works there
        shutil.rmtree(folder, ignore_errors=True)
