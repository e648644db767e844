"""How a gate decision is written down for people: version-description notes and digests.

Pure text functions; ``promote`` writes what they return to the registry.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

from registry_hooks.gate import Decision

DESCRIPTION_LIMIT = 5000  # characters MLflow's SQL store keeps for a model version description
NOTE_MARK = "\n\n### Gate "  # every gate note starts with this; older ones are trimmed first


def reasons_digest(decision: Decision) -> str:
    """SHA-256 of the verdict lines: equal digests mean the same reasons, to the digit."""
    return hashlib.sha256(json.dumps([str(r) for r in decision.reasons]).encode()).hexdigest()


def gate_note(
    *, passed: bool, alias: str, time: str, decision: Decision, notes: Sequence[str], action: str,
    thresholds_sha256: str, confidence_level: float, run_id: str | None,
) -> str:
    """The markdown note appended to the version description (what the UI shows)."""
    title = f"{NOTE_MARK}{'passed' if passed else 'rejected'} for `@{alias}` ({time})\n"
    lines = [f"- {r}" for r in decision.reasons]
    lines += [f"- note: {n}" for n in notes]
    lines.append(f"\n**Result:** {action}  ")
    where = f" · promote run `{run_id}` (decision.json)" if run_id else ""
    lines.append(f"thresholds sha256 `{thresholds_sha256[:12]}` · {confidence_level * 100:g}% intervals{where}")
    return title + "\n".join(lines) + "\n"


def append_note(description: str | None, note: str, limit: int = DESCRIPTION_LIMIT) -> str:
    """Append a gate note, keeping the description within ``limit`` characters.

    The description is the text people wrote (kept) followed by gate notes, oldest first.
    When it would grow past the limit, the oldest gate notes go first (every decision stays
    in its promote run's ``decision.json``); the newest note is always kept.
    """
    head, *older = (description or "").split(NOTE_MARK)
    notes = [NOTE_MARK + n for n in older] + [note]
    while len(notes) > 1 and len(head) + sum(map(len, notes)) > limit:
        notes.pop(0)
    tail = "".join(notes)[:limit]  # only a single note longer than the limit is cut (its end)
    room = limit - len(tail)
    if len(head) > room:
        head = head[: max(room - 1, 0)] + ("…" if room > 0 else "")
    return head + tail
