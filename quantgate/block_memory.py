"""This machine's memory of the description blocks quantgate replaced.

A version's ``description_block_sha256`` tag names the block quantgate wrote last, and a seal
once issued stays valid: the store cannot say which seal is newest, since a store writer can
put any earlier tag value back. The forty-first adversarial run deleted quantgate's current
block (quantgate's own text), put back the tag of an older block that a person had quoted
verbatim below it, and the key holder's next gate rewrote the person's quote as its block.

So each machine remembers the seals it has replaced, in a file of its user's own: a seal
remembered here never names quantgate's block again, and the next write adds a new block
instead, leaving every older copy as the person's text. It protects what this machine wrote; a
machine that never saw the newer block cannot know it was there. The seal alone is the entry:
with a key it is bound to the model's name and the version's number, and a block's text names
its version. Nothing else from the store goes in (the forty-second run moved a version's
``creation_time`` in sqlite, and a memory keyed by the version's identity forgot every seal).

The file is ``$QUANTGATE_STATE_DIR/superseded-description-blocks`` (default
``$XDG_STATE_HOME/quantgate``, else ``~/.local/state/quantgate``): one seal per line, appended
(never rewritten), mode 0600 in a 0700 folder.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

STATE_DIR_ENV = "QUANTGATE_STATE_DIR"
# A block's SHA-256, or with a key quantgate.evidence_signing's "hmac-sha256:<key id>:<mac>"
SEAL_LINE = re.compile(r"[0-9a-f]{64}|hmac-sha256:[0-9a-f]{12}:[0-9a-f]{64}")
FILE_NAME = "superseded-description-blocks"


def memory_file() -> Path:
    base = os.environ.get(STATE_DIR_ENV)
    if not base:
        state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
        base = os.path.join(state, "quantgate")
    return Path(base) / FILE_NAME


def superseded(seal: str | None) -> bool:
    """Whether this machine has replaced the block ``seal`` names. A memory holding a line that
    is no seal was written over by something else (the forty-eighth adversarial run had ONNX
    Runtime write its session file over it through a link): the seals it held are lost, so
    every seal counts as replaced, quantgate adds a new block rather than rewrite any, and a
    warning names the file."""
    if not seal:
        return False
    path = memory_file()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False  # nothing remembered yet
    with os.fdopen(fd, encoding="utf-8", errors="replace") as f:
        lines = [line.rstrip("\n") for line in f]
    if all(SEAL_LINE.fullmatch(line) for line in lines):
        return seal in lines
    print(
        f"warning: {path} holds lines that are no description-block seal, so what it remembered is lost; "
        "quantgate adds a new block to every description it writes until that file holds seals only",
        file=sys.stderr,
    )
    return True


def remember_superseded(seal: str | None) -> None:
    """Remember that the block ``seal`` names was replaced. A machine
    that cannot write its memory says so once on stderr and goes on: the description written
    stays right, only this defence is missing there."""
    if not seal or not SEAL_LINE.fullmatch(seal):
        return  # no seal names no block (a tag a writer set to other text)
    path = memory_file()
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as f:
            f.write(f"{seal}\n")  # one short append: whole, even beside another writer
    except OSError as exc:
        print(f"warning: cannot remember the replaced description block in {path}: {exc}", file=sys.stderr)
