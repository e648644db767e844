"""quantgate's block in a shared description: a person's text around it is kept whole, even when
it quotes the block's markers (the sixth adversarial run lost the text after a quoted BEGIN)."""

from __future__ import annotations

import pytest

from quantgate.description import BEGIN, END, LEGACY_CARD_END, put_card, put_note, split

CARD = f"## m v3: onnx-int8-dynamic\n\ncard text\n{LEGACY_CARD_END}"
OWNER = "m v3"  # the version the card's heading names, as evaluate and the gate pass it


def with_card(description: str | None, card: str, owner: str | None = None) -> str:
    """The card put in as quantgate did before it kept the block's digest (no tag to pass)."""
    return put_card(description, card, owner=owner)[0]


def append_note(description: str | None, note: str, owner: str | None = None) -> str:
    """A gate note put in as quantgate did before it kept the block's digest."""
    return put_note(description, note, owner=owner)[0]


@pytest.mark.parametrize(
    ("above", "below"),
    [
        (f"quotes {BEGIN} inline\n- it is generated.\nRollback contact: alice@example.org", ""),
        (f"{BEGIN}\nquoted on its own line", f"and below: {END}"),
        ("", f"below quotes both {BEGIN}\n{END}\nstill mine"),
        ("plain note", "plain footer"),
    ],
)
def test_text_around_the_block_survives_a_new_card(above, below):
    description = with_card("", CARD)
    shared = "\n\n".join(part for part in (above, description, below) if part)
    parts = split(shared, OWNER)
    assert (parts.above, parts.below) == (above, below)
    updated = with_card(shared, CARD.replace("card text", "new card"), owner=OWNER)
    assert updated.startswith(above) and updated.endswith(below) and "new card" in updated
    assert "card text" not in updated


def test_a_persons_heading_quoting_the_old_card_marker_is_not_taken_for_a_card():
    text = f"## Release plan\n\nwe quote {LEGACY_CARD_END} here\nmore"
    assert split(text).below == text
    legacy = f"{CARD}\n\nan older note"
    parts = split(legacy)
    assert parts.card == CARD and parts.below == "an older note"


@pytest.mark.parametrize("where", ["above", "below"])
def test_a_quoted_example_block_is_a_persons_text_not_quantgates(where):
    """The seventh run: a person's description quoting a whole example block (BEGIN, a line,
    END, each on its own line) had that example replaced by the card; quantgate's block starts
    with its card heading or a gate note."""
    example = f"How the block looks:\n{BEGIN}\nALICE-EXAMPLE: keep me\n{END}\nend of example"
    description = with_card("", CARD)
    shared = f"{example}\n\n{description}" if where == "above" else f"{description}\n\n{example}"
    updated = with_card(shared, CARD.replace("card text", "new card"), owner=OWNER)
    assert example in updated and "new card" in updated and "card text" not in updated


def test_a_block_whose_card_was_dropped_for_room_is_still_found():
    from quantgate.description import Parts, compose

    text, own = compose(Parts(above="mine", card="", notes=["\n\n### Gate passed: a note"], below=""))
    text += "\n\nafter"
    parts = split(text, OWNER, own)
    assert parts.above == "mine" and parts.below == "after" and parts.notes == ["\n\n### Gate passed: a note"]


def test_another_versions_whole_block_quoted_below_stays_the_persons():
    """The ninth run: text below the block quoting another version's whole block (its card and a
    gate note) took the note of the next gate and then lost the quoted card to the next
    evaluation, since the last marker pair counted as quantgate's."""

    other = with_card("", CARD.replace("m v3", "m v2").replace("card text", "v2's card"))
    other = append_note(other, "\n\n### Gate passed: v2's note")
    mine = with_card("", CARD)
    shared = f"{mine}\n\nFor comparison, v2's block:\n\n{other}\n\nthat was v2."
    noted = append_note(shared, "\n\n### Gate rejected: v3's note", owner="m v3")
    recarded = with_card(noted, CARD.replace("card text", "new card"), owner="m v3")
    assert recarded.endswith(f"For comparison, v2's block:\n\n{other}\n\nthat was v2."), recarded
    parts = split(recarded, owner="m v3")
    assert "new card" in parts.card and parts.notes == ["\n\n### Gate rejected: v3's note"]
    assert "card text" not in recarded


@pytest.mark.parametrize("case", ["notes-only", "renamed", "same-version-copy"])
def test_the_block_quantgate_wrote_last_is_found_by_its_digest(case):
    """The tenth run: a block holding only gate notes (no card heading to match), a card naming
    the model's old name, and a person's word-for-word copy of the same block below it each let
    the person's quote take quantgate's next note or card."""

    other = append_note(with_card("", CARD.replace("m v3", "m v2")), "\n\n### Gate passed: v2's note")
    if case == "notes-only":
        mine, own = put_note("", "\n\n### Gate rejected: never evaluated")
    else:
        mine, own = put_card("", CARD)
    quote = mine if case == "same-version-copy" else other
    person = f"Alice, quoting a block:\n\n{quote}\n\nend of quote."
    shared = f"{mine}\n\n{person}"
    owner = "m-prod v3" if case == "renamed" else "m v3"
    noted, own = put_note(shared, "\n\n### Gate passed: the next note", owner=owner, own=own)
    recarded, own = put_card(noted, CARD.replace("card text", "new card"), owner=owner, own=own)
    assert recarded.endswith(person), recarded
    parts = split(recarded, owner, own)
    assert "new card" in parts.card and parts.notes[-1] == "\n\n### Gate passed: the next note"


@pytest.mark.parametrize("write", ["card", "note"])
def test_a_fresh_versions_quote_of_another_versions_block_stays_the_persons(write):
    """A version with no block of its own yet (no digest, no card naming it) whose description
    quotes another version's whole block: the quote was the "last pair", so the first evaluate
    wrote the new card into it and the first gate its note."""

    other = append_note(with_card("", CARD.replace("m v3", "m v2")), "\n\n### Gate passed: v2's note")
    person = f"Alice: v3 should look like v2 did:\n\n{other}\n\nthanks"
    if write == "card":
        updated, own = put_card(person, CARD.replace("card text", "new card"), owner=OWNER)
    else:
        updated, own = put_note(person, "\n\n### Gate rejected: never evaluated", owner=OWNER)
    assert person in updated, updated  # a card goes above a person's text, a note below it
    parts = split(updated, OWNER, own)
    assert parts.above + parts.below == person
    assert ("new card" in parts.card) if write == "card" else parts.notes == ["\n\n### Gate rejected: never evaluated"]


def test_no_room_leaves_no_digest_behind_for_a_persons_verbatim_quote():
    """The eleventh run, H1: with a person's text too long for the block, the gate wrote their
    text alone but kept the old digest tag; their word-for-word quote of that block then matched
    it, and the next gate rewrote the quote."""
    from quantgate.description import NO_BLOCK

    block, own = put_note("", "\n\n### Gate passed: at release", owner=OWNER)
    person = f"For the record:\n\n{block}\n\nEnd of quote (Bob).\n\n" + "n" * (4980 - len(block))
    squeezed, own = put_note(f"{block}\n\n{person}", "\n\n### Gate passed: again", owner=OWNER, own=own)
    assert squeezed == person and own == NO_BLOCK  # no room: their text alone, and a tag no quote can match
    again, own = put_note(squeezed, "\n\n### Gate passed: a third time", owner=OWNER, own=own)
    assert again == person


def test_a_card_shaped_text_of_another_version_is_not_taken_for_this_versions_old_card():
    """The eleventh run, H2: a fresh version's description starting with another version's card
    (copied from between the markers) was taken as quantgate's card from before blocks existed,
    replaced by the first evaluate and pulled into the block by the first gate."""

    person = CARD.replace("m v3", "m v2").replace("card text", "v2's card, for comparison") + "\n\nCarol"
    carded, _ = put_card(person, CARD.replace("card text", "new card"), owner=OWNER)
    noted, _ = put_note(person, "\n\n### Gate rejected: never evaluated", owner=OWNER)
    assert carded.endswith(person) and noted.startswith(person)
    legacy = CARD + "\n\nan older note"  # this version's own card from before blocks: still quantgate's
    assert split(legacy, OWNER).card == CARD


def test_a_block_a_person_edited_is_left_to_them_not_mistaken_for_their_quote_below():
    """The eleventh run, H3: a person signed off inside quantgate's block and pasted the block
    as it stood at an earlier gate below it; the digest no longer matched, the fallback took the
    last pair naming the version (the quote), and the gate's note went into it. (A copy that is
    word for word the block quantgate wrote last cannot be told from it: the first such pair is
    taken, and the edited block is kept whole as the person's text.)"""

    earlier, own = put_card("", CARD, owner=OWNER)
    block, own = put_note(earlier, "\n\n### Gate passed: at sign-off", owner=OWNER, own=own)
    edited = block.replace("at sign-off", "at sign-off\nSigned off by Carol.")
    person_below = f"The card as it stood before the gate (Carol):\n\n{earlier}"
    noted, own = put_note(f"{edited}\n\n{person_below}", "\n\n### Gate passed: later", owner=OWNER, own=own)
    assert noted.startswith(f"{edited}\n\n{person_below}")  # both kept whole; a new block after them
    assert split(noted, OWNER, own).notes == ["\n\n### Gate passed: later"]
