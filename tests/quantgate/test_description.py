"""quantgate's block in a shared description: a person's text around it is kept whole, even when
it quotes the block's markers (the sixth adversarial run lost the text after a quoted BEGIN)."""

from __future__ import annotations

import pytest

from quantgate.description import BEGIN, END, LEGACY_CARD_END, split, with_card

CARD = f"## m v3: onnx-int8-dynamic\n\ncard text\n{LEGACY_CARD_END}"


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
    parts = split(shared)
    assert (parts.above, parts.below) == (above, below)
    updated = with_card(shared, CARD.replace("card text", "new card"))
    assert updated.startswith(above) and updated.endswith(below) and "new card" in updated
    assert "card text" not in updated


def test_a_persons_heading_quoting_the_old_card_marker_is_not_taken_for_a_card():
    text = f"## Release plan\n\nwe quote {LEGACY_CARD_END} here\nmore"
    assert split(text).below == text
    legacy = f"{CARD}\n\nan older note"
    parts = split(legacy)
    assert parts.card == CARD and parts.below == "an older note"
