"""The gate's notes in a version's description: a person's text is kept whole, only quantgate's
own oldest notes are trimmed."""

from __future__ import annotations

from quantgate.description import split
from registry_hooks.gate.report import NOTE_MARK, append_note


def test_append_note_keeps_human_text_and_trims_oldest_gate_notes():
    desc = "Written by a person."
    for i in range(50):
        desc = append_note(desc, f"{NOTE_MARK}passed for `@staging` (t{i})\n" + "- ok: x\n" * 20, limit=1000)
        assert len(desc) <= 1000
    assert desc.startswith("Written by a person.")
    assert "(t49)" in desc and "(t0)" not in desc


def test_append_note_cuts_only_what_cannot_fit():
    # Issue 17: human text is never cut; only quantgate's own block shrinks (the note's end).
    # (Before, this test demanded that the person's text be cut to make room for the note.)
    note = f"{NOTE_MARK}rejected for `@staging` (t)\n"
    alone = append_note(None, note)
    assert note in alone and split(alone).notes == [note] and split(alone).above == split(alone).below == ""
    out = append_note("h" * 100, note, limit=400)
    assert len(out) <= 400 and out.startswith("h" * 100) and note in out
    assert append_note("h" * 100, note, limit=60) == "h" * 100  # no room: the person's text, whole
    cut = append_note("h" * 100, note + "x" * 500, limit=400)
    assert len(cut) <= 400 and cut.startswith("h" * 100) and NOTE_MARK + "rejected" in cut
