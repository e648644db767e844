"""The gate's notes in a version's description: a person's text is kept whole, only quantgate's
own oldest notes are trimmed."""

from __future__ import annotations

from quantgate.description import NO_BLOCK, put_note, split
from registry_hooks.gate.report import NOTE_MARK


def test_append_note_keeps_human_text_and_trims_oldest_gate_notes():
    desc, own = "Written by a person.", None
    for i in range(50):
        note = f"{NOTE_MARK}passed for `@staging` (t{i})\n" + "- ok: x\n" * 20
        desc, own = put_note(desc, note, limit=1000, own=own)
        assert len(desc) <= 1000
    assert desc.startswith("Written by a person.")
    assert "(t49)" in desc and "(t0)" not in desc


def test_append_note_cuts_only_what_cannot_fit():
    # Issue 17: human text is never cut; only quantgate's own block shrinks (the note's end).
    # (Before, this test demanded that the person's text be cut to make room for the note.)
    note = f"{NOTE_MARK}rejected for `@staging` (t)\n"
    alone, own = put_note(None, note, own=None)
    parts = split(alone, own)
    assert note in alone and parts.notes == [note] and parts.above == parts.below == ""
    out, _ = put_note("h" * 100, note, limit=400, own=None)
    assert len(out) <= 400 and out.startswith("h" * 100) and note in out
    assert put_note("h" * 100, note, limit=60, own=None) == ("h" * 100, NO_BLOCK)  # no room: their text, whole
    cut, _ = put_note("h" * 100, note + "x" * 500, limit=400, own=None)
    assert len(cut) <= 400 and cut.startswith("h" * 100) and NOTE_MARK + "rejected" in cut
