"""How a gate decision is written down for people: version-description notes and digests.

Pure text functions; ``registry_hooks.gate.verdict`` writes what they return to the registry.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

from quantgate.description import NOTE_MARK
from quantgate.printable import shown
from registry_hooks.gate.decision import Decision


def reasons_digest(decision: Decision) -> str:
    """SHA-256 of the verdict lines: equal digests mean the same reasons, to the digit."""
    return hashlib.sha256(json.dumps([str(r) for r in decision.reasons]).encode()).hexdigest()


def markdown_inline(text: object) -> str:
    """:func:`shown`, and no HTML comment can open or close in it: a quoted ``<!--`` hid the rest
    of the note (and a marker could pose as quantgate's block's own)."""
    return shown(text).replace("<!--", "<\\!--").replace("-->", "--\\>")


def gate_note(
    *,
    passed: bool,
    alias: str,
    time: str,
    decision: Decision,
    notes: Sequence[str],
    action: str,
    thresholds_sha256: str,
    confidence_level: float,
    run_id: str | None,
) -> str:
    """The markdown note appended to the version description (what the UI shows)."""
    title = f"{NOTE_MARK}{'passed' if passed else 'rejected'} for `@{alias}` ({time})\n"
    lines = [f"- {markdown_inline(r)}" for r in decision.reasons]
    lines += [f"- note: {markdown_inline(n)}" for n in notes]
    lines.append(f"\n**Result:** {markdown_inline(action)}  ")
    where = f" · promote run `{run_id}` (decision.json)" if run_id else ""
    lines.append(f"thresholds sha256 `{thresholds_sha256[:12]}` · {confidence_level * 100:g}% intervals{where}")
    return title + "\n".join(lines) + "\n"
