"""quantgate's block in a shared description: a person's text around it is kept whole, even when
it quotes the block's markers (the sixth adversarial run lost the text after a quoted BEGIN), and
the block is only ever the one the version's tag names."""

from __future__ import annotations

import pytest

from quantgate import description
from quantgate.description import BEGIN, END, NO_BLOCK, block_sha256, split
from quantgate.evidence_signing import block_seal

CARD = "## m v3: onnx-int8-dynamic\n\ncard text\n<!-- end quantgate model card -->"
KEY = b"k" * 32
OWNER = "m v3"  # whose block, as evaluate and the gate name it


def put_card(text: str | None, card: str, **kw) -> tuple[str, str]:
    """quantgate.description.put_card for version m v3 (the version under test)."""
    return description.put_card(text, card, **{"owner": OWNER, **kw})


def put_note(text: str | None, note: str, **kw) -> tuple[str, str]:
    """quantgate.description.put_note for version m v3."""
    return description.put_note(text, note, **{"owner": OWNER, **kw})


def with_card(text: str | None, card: str, own: str | None = None) -> str:
    """Another version's (m v2's) card put in; only the text."""
    return description.put_card(text, card, own=own, owner="m v2")[0]


def append_note(text: str | None, note: str, own: str | None = None) -> str:
    """A gate note put into m v2's description; only the text."""
    return description.put_note(text, note, own=own, owner="m v2")[0]


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
    description, own = put_card("", CARD, own=None)
    shared = "\n\n".join(part for part in (above, description, below) if part)
    parts = split(shared, own)
    assert (parts.above, parts.below) == (above, below)
    updated, own = put_card(shared, CARD.replace("card text", "new card"), own=own)
    assert updated.startswith(above) and updated.endswith(below) and "new card" in updated
    assert "card text" not in updated


@pytest.mark.parametrize("where", ["above", "below"])
def test_a_quoted_example_block_is_a_persons_text_not_quantgates(where):
    """The seventh run: a person's description quoting a whole example block (BEGIN, a line,
    END, each on its own line) had that example replaced by the card; quantgate's block starts
    with its card heading or a gate note."""
    example = f"How the block looks:\n{BEGIN}\nALICE-EXAMPLE: keep me\n{END}\nend of example"
    description, own = put_card("", CARD, own=None)
    shared = f"{example}\n\n{description}" if where == "above" else f"{description}\n\n{example}"
    updated, _ = put_card(shared, CARD.replace("card text", "new card"), own=own)
    assert example in updated and "new card" in updated and "card text" not in updated


def test_a_block_whose_card_was_dropped_for_room_is_still_found():
    from quantgate.description import Parts, compose

    text, own = compose(Parts(above="mine", card="", notes=["\n\n### Gate passed: a note"], below=""))
    text += "\n\nafter"
    parts = split(text, own)
    assert parts.above == "mine" and parts.below == "after" and parts.notes == ["\n\n### Gate passed: a note"]


def test_another_versions_whole_block_quoted_below_stays_the_persons():
    """The ninth run: text below the block quoting another version's whole block (its card and a
    gate note) took the note of the next gate and then lost the quoted card to the next
    evaluation, since the last marker pair counted as quantgate's."""

    card = CARD.replace("m v3", "m v2").replace("card text", "v2's card")
    other = append_note(with_card("", card), "\n\n### Gate passed: v2's note")
    mine, own = put_card("", CARD, own=None)
    shared = f"{mine}\n\nFor comparison, v2's block:\n\n{other}\n\nthat was v2."
    noted, own = put_note(shared, "\n\n### Gate rejected: v3's note", own=own)
    recarded, own = put_card(noted, CARD.replace("card text", "new card"), own=own)
    assert recarded.endswith(f"For comparison, v2's block:\n\n{other}\n\nthat was v2."), recarded
    parts = split(recarded, own)
    assert "new card" in parts.card and parts.notes == ["\n\n### Gate rejected: v3's note"]
    assert "card text" not in recarded


@pytest.mark.parametrize("case", ["notes-only", "renamed", "same-version-copy"])
def test_the_block_quantgate_wrote_last_is_found_by_its_digest(case):
    """The tenth run: a block holding only gate notes (no card heading to match), a card naming
    the model's old name, and a person's word-for-word copy of the same block below it each let
    the person's quote take quantgate's next note or card."""

    other = append_note(with_card("", CARD.replace("m v3", "m v2")), "\n\n### Gate passed: v2's note")
    card = CARD.replace("m v3", "m-old v3") if case == "renamed" else CARD
    if case == "notes-only":
        mine, own = put_note("", "\n\n### Gate rejected: never evaluated", own=None)
    else:
        mine, own = put_card("", card, own=None)
    quote = mine if case == "same-version-copy" else other
    person = f"Alice, quoting a block:\n\n{quote}\n\nend of quote."
    shared = f"{mine}\n\n{person}"
    noted, own = put_note(shared, "\n\n### Gate passed: the next note", own=own)
    recarded, own = put_card(noted, CARD.replace("card text", "new card"), own=own)
    if case == "same-version-copy":  # two identical sealed blocks: neither is taken, both stay as they were
        assert recarded.startswith(shared), recarded
    else:
        assert recarded.endswith(person), recarded
    parts = split(recarded, own)
    assert "new card" in parts.card and parts.notes[-1] == "\n\n### Gate passed: the next note"


@pytest.mark.parametrize("write", ["card", "note"])
def test_a_fresh_versions_quote_of_another_versions_block_stays_the_persons(write):
    """A version with no block of its own yet (no tag) whose description quotes another
    version's whole block: the quote was the "last pair", so the first evaluate wrote the new
    card into it and the first gate its note."""

    other = append_note(with_card("", CARD.replace("m v3", "m v2")), "\n\n### Gate passed: v2's note")
    person = f"Alice: v3 should look like v2 did:\n\n{other}\n\nthanks"
    if write == "card":
        updated, own = put_card(person, CARD.replace("card text", "new card"), own=None)
    else:
        updated, own = put_note(person, "\n\n### Gate rejected: never evaluated", own=None)
    assert person in updated, updated  # a card goes above a person's text, a note below it
    parts = split(updated, own)
    assert parts.above + parts.below == person
    assert ("new card" in parts.card) if write == "card" else parts.notes == ["\n\n### Gate rejected: never evaluated"]


def test_no_room_leaves_no_digest_behind_for_a_persons_verbatim_quote():
    """The eleventh run, H1: with a person's text too long for the block, the gate wrote their
    text alone but kept the old digest tag; their word-for-word quote of that block then matched
    it, and the next gate rewrote the quote."""

    block, sealed = put_note("", "\n\n### Gate passed: at release", own=None)
    filler = "n" * 4990  # leaves no room for any block
    squeezed, own = put_note(f"{block}\n\n{filler}", "\n\n### Gate passed: again", own=sealed)
    assert squeezed == filler and own == NO_BLOCK  # no room: their text alone, and a tag no quote can match
    person = f"For the record:\n\n{block}\n\nEnd of quote (Bob).\n\n{filler}"
    again, own = put_note(person, "\n\n### Gate passed: a third time", own=own)
    assert again == person
    # with the block itself still there, the quote is a copy no tag can tell from it: nothing is taken
    both = f"{block}\n\n{person}"
    assert put_note(both, "\n\n### Gate passed: again", own=sealed)[0] == both


@pytest.mark.parametrize("case", ["own-card", "other-version-card", "legacy-card"])
def test_without_the_tag_nothing_is_taken_for_quantgates(case):
    """The eleventh run's H2 and the thirteenth's D6: a fresh version's text that starts like a
    card (another version's, this version's heading, or one ending with the card marker of
    quantgate's first releases) was taken for quantgate's card, replaced by the first evaluate
    and pulled into the block by the first gate. Without the tag nothing is quantgate's: a new
    block is written and every character of the person's text is kept."""

    heading = {"own-card": "m v3", "other-version-card": "m v2", "legacy-card": "m v3"}[case]
    person = CARD.replace("m v3", heading).replace("card text", "Dave's draft of the card") + "\n\nDave"
    carded, own = put_card(person, CARD.replace("card text", "new card"), own=None)
    noted, _ = put_note(person, "\n\n### Gate rejected: never evaluated", own=None)
    assert carded.endswith(person) and noted.startswith(person)
    assert split(carded, own).below == person


def test_a_block_a_person_edited_is_left_to_them_even_when_the_tag_is_deleted():
    """The eleventh run's H3 and the thirteenth's D2b: a person signed off inside quantgate's
    block and pasted the block as it stood at an earlier gate below it. With the tag no longer
    matching (or deleted by a writer) the edited block and the quote are the person's, and the
    next note goes into a new block. (A copy word for word the block quantgate wrote last cannot
    be told from it: the first such pair is taken, and the edited block is kept whole.)"""

    earlier, own = put_card("", CARD, own=None)
    block, own = put_note(earlier, "\n\n### Gate passed: at sign-off", own=own)
    edited = block.replace("at sign-off", "at sign-off\nSigned off by Carol.")
    person_below = f"The card as it stood before the gate (Carol):\n\n{earlier}"
    for tag in (own, None):  # the tag as quantgate left it, and deleted
        noted, new = put_note(f"{edited}\n\n{person_below}", "\n\n### Gate passed: later", own=tag)
        assert noted.startswith(f"{edited}\n\n{person_below}")  # both kept whole; a new block after them
        assert split(noted, new).notes == ["\n\n### Gate passed: later"]
        recarded, _ = put_card(f"{edited}\n\n{person_below}", CARD.replace("card text", "new"), own=tag)
        assert recarded.endswith(f"{edited}\n\n{person_below}")


def test_under_a_key_a_tag_pointed_at_a_persons_quote_finds_nothing():
    """The thirteenth run, D3b: a writer set the tag to the digest of a person's quoted block,
    and the next evaluate rewrote the quote and the commentary in it. Under a key the tag is an
    HMAC bound to the version, which a writer cannot make for the quote (nor reuse another
    version's)."""

    seal = block_seal(KEY, "m", "3")
    mine, own = put_card("", CARD, own=None, seal=seal)
    assert own.startswith("hmac-sha256:") and split(mine, own, seal).card == CARD
    quote = mine.replace("card text", "card text\nAlice: this figure looks off")
    shared = f"{mine}\n\nAlice's annotated copy:\n\n{quote}"
    for forged in (block_sha256(quote), block_seal(KEY, "m", "4")(quote), block_seal(b"w" * 32, "m", "3")(quote)):
        updated, _ = put_card(shared, CARD.replace("card text", "new card"), own=forged, seal=seal)
        assert updated.endswith(shared), updated  # nothing taken: a new block above, the quote whole
    assert "this figure looks off" in split(shared, block_sha256(quote)).card  # no key: the README's limit


@pytest.mark.parametrize("write", ["card", "note"])
def test_under_a_key_an_older_seal_put_back_does_not_take_a_quote_of_that_block(write):
    """The fourteenth run, D1: a person quoted the block word for word below it; after the next
    evaluate wrote a new block, a writer put the tag back to the old block's seal (every seal
    issued stays valid), and the next gate wrote into the quote, the next evaluate replaced the
    quoted card. Each block carries a write number; a tag naming a pair older than another pair
    in the text is stale, and a new block is written."""

    seal = block_seal(KEY, "m", "3")
    first, old = put_card("Intro", CARD, own=None, seal=seal)
    quote = f"My quote of Monday's card:\n{first.removeprefix('Intro' + chr(10) * 2)}\n\nend of quote."
    later, new = put_card(f"{first}\n\n{quote}", CARD.replace("card text", "card two"), own=old, seal=seal)
    assert later.endswith(quote) and "card two" in split(later, new, seal, OWNER).card
    if write == "card":
        updated, tag = put_card(later, CARD.replace("card text", "card three"), own=old, seal=seal)
    else:
        updated, tag = put_note(later, "\n\n### Gate passed: later", own=old, seal=seal)
    assert quote in updated and later.removeprefix("Intro") in updated, updated  # both kept, a new block added
    parts = split(updated, tag, seal, OWNER)
    assert quote in parts.above + parts.below and ("card three" in parts.card or parts.notes)


def test_a_forged_huge_write_number_does_not_switch_the_stale_tag_check_off():
    """The fifteenth run, D3: a writer added a block-shaped pair numbered 999999999999; quantgate's
    next number had 13 digits, which its own reader (at most 12) could not read, so every later
    block counted as number 0 and a replayed older seal took a person's quote again (and the
    unread number lines piled up inside the block). Numbers have any length now."""

    seal = block_seal(KEY, "m", "3")
    first, own = put_card("Team notes.", CARD, own=None, seal=seal)
    forged = f"{BEGIN}\n## m v3: x\n\ny\n<!-- quantgate:write 999999999999 of {OWNER} -->\n{END}"
    second, older = put_card(f"{first}\n\n{forged}", CARD.replace("card text", "card B"), own=own, seal=seal)
    assert "<!-- quantgate:write 1000000000000 of m v3 -->" in second
    block = second[second.index(f"{BEGIN}\n## m v3: onnx-int8-dynamic\n\ncard B") :]
    block = block[: block.index(END) + len(END)]
    quote = f"Alice quotes today's card:\n{block}\n\nAlice: end."
    third, _ = put_note(f"{second}\n\n{quote}", "\n\n### Gate rejected: later", own=older, seal=seal)
    assert third.startswith(f"{second}\n\n{quote}")  # a verbatim copy beside its block: neither is taken
    replayed, _ = put_card(third, CARD.replace("card text", "card C"), own=older, seal=seal)  # the older seal back
    assert quote in replayed and replayed.count("<!-- quantgate:write") == replayed.count(BEGIN) == 6  # none piled up


@pytest.mark.parametrize(
    ("above", "below"),
    [
        ("\n\n", ""),  # a person's blank lines alone above the block
        ("", "\n\n"),  # and below it
        ("\n\n\n", "\n"),
        ("Alice\n", "\nBob"),  # text touching the block with a single newline
        ("Alice\n\n\n", "\n\n\nBob"),  # with more blank lines than quantgate puts
    ],
)
def test_whitespace_next_to_the_block_is_kept_byte_for_byte(above, below):
    """The thirty-first run's case C: where a person's only text around the block was blank
    lines, a new card dropped them, and text touching the block with one newline got two more.
    Writing the block again now changes no character outside it, whitespace included."""

    block, own = put_card("", CARD, own=None)
    shared = above + block + below
    for turn in range(3):  # each write keeps the person's bytes: nothing drifts over writes
        shared, own = put_card(shared, CARD.replace("card text", f"card {turn}"), own=own)
        shared, own = put_note(shared, f"\n\n### Gate passed: note {turn}", own=own)
        start, end = shared.index(BEGIN), shared.index(END) + len(END)
        assert (shared[:start], shared[end:]) == (above, below), repr(shared)
    assert "card 2" in shared and "note 2" in shared


def test_with_no_room_the_persons_own_newlines_next_to_the_block_are_all_that_joins_their_text():
    """The thirty-fifth run's case 6: long text just above and below the block, one newline each
    side; with no room for the block, the gate joined the two with two newlines more."""
    block, own = put_card("", CARD, own=None)
    above, below = "A" * 2480 + "\n", "\n" + "B" * 2480
    squeezed, own = put_note(above + block + below, "\n\n### Gate passed: " + "n" * 300, own=own)
    assert (squeezed, own) == (above + below, NO_BLOCK)
