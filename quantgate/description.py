"""A version description that people and quantgate share: quantgate owns one delimited block.

The block holds the model card (written by ``evaluate``) and the gate's verdict notes (one per
decision, oldest first). Everything outside it - above or below - is a person's text and is
kept whole, character for character. When the description would exceed the store's limit,
only quantgate's own block shrinks: oldest notes first, then the card, then the end of the
newest note; the full verdicts stay in each promote run's ``decision.json`` and the figures in
the evaluation run. Pure text functions.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

# MLflow's SQL schema declares model_versions.description as VARCHAR(5000): PostgreSQL and
# MySQL enforce it (SQLite does not), so quantgate stays within it on every store.
DESCRIPTION_LIMIT = 5000
BEGIN = (
    "<!-- quantgate:begin (model card and gate verdicts, rewritten by quantgate; text outside this block is kept) -->"
)
END = "<!-- quantgate:end -->"
NOTE_MARK = "\n\n### Gate "  # every gate note starts with this
LEGACY_CARD_END = "<!-- end quantgate model card -->"  # the card's last line, also before blocks existed
SEP = "\n\n"  # between a person's text and the block


@dataclass
class Parts:
    above: str = ""  # a person's text before the block
    card: str = ""
    notes: list[str] = field(default_factory=list)
    below: str = ""  # a person's text after the block


NO_BLOCK = "none: no room for quantgate's block"  # the tag's value when the person's text left no room


def block_sha256(block: str) -> str:
    """SHA-256 of a whole block as written (BEGIN line to END line): what the version's
    ``description_block_sha256`` tag records, so the block can be told from a copy of another."""
    return hashlib.sha256(block.encode("utf-8")).hexdigest()


def _block_span(text: str, owner: str | None = None, own: str | None = None) -> tuple[int, int] | None:
    """Where quantgate's block is: ``(start of BEGIN, end of END)``, or ``None`` for no block.

    The block is written as a BEGIN line, the card and notes, and an END line, with no marker
    inside it; a person may quote either marker, or a whole block, in their own text above or
    below, so the candidates are the BEGIN ... END pairs with no marker between them whose BEGIN
    starts a line, whose END ends one, and whose content starts as quantgate's does (a card
    heading or a gate note).

    ``own``, the version's ``description_block_sha256`` tag, decides whenever it is set: the pair
    with exactly that content (:func:`block_sha256`) is quantgate's (of two identical ones, the
    first); without one - the block was edited, or removed, or had no room (:data:`NO_BLOCK`) -
    there is none, and a new block is written. Guessing instead would rewrite a person's copy
    of the block; not guessing at worst leaves an edited block behind as their text.

    Without the tag (a description written before it was kept), ``owner``
    (``"<name> v<version>"``, the card's heading) decides: the one pair whose card names this
    version. None, or several (a person's copy of it), is no block, for the same reason."""
    spans, start = [], text.find(BEGIN)
    while start != -1:
        end = text.find(END, start)
        if end == -1:
            break
        inner = text[start + len(BEGIN) : end]
        on_lines = (start == 0 or text[start - 1] == "\n") and text[end + len(END) : end + len(END) + 1] in ("", "\n")
        if BEGIN not in inner and on_lines and OWN_BLOCK.match(inner) and inner.endswith("\n"):
            spans.append((start, end + len(END)))
        start = text.find(BEGIN, start + len(BEGIN))
    if own is not None:
        exact = [span for span in spans if block_sha256(text[span[0] : span[1]]) == own]
        return exact[0] if exact else None
    heading = f"{BEGIN}\n## {owner}: "
    mine = [span for span in spans if owner and text.startswith(heading, span[0])]
    return mine[0] if len(mine) == 1 else None


# A model card written before blocks existed: "## <name> v<N>: <variant>" at the very start.
LEGACY_CARD = re.compile(r"## .+ v\d+: .+\n\n")
# What quantgate's own block starts with: its card, or (with the card dropped for room) a note.
OWN_BLOCK = re.compile(r"\n(## .+ v\d+: .+\n\n|\n\n### Gate )")


def split(description: str | None, owner: str | None = None, own: str | None = None) -> Parts:
    """Separate a description into a person's text and quantgate's block (``owner``, ``own``:
    see :func:`_block_span`). A model card from before blocks existed counts only on a version
    quantgate never wrote a block for (no ``own``), and only when its heading names ``owner``."""
    text = description or ""
    span = _block_span(text, owner, own)
    if span:
        above, below = text[: span[0]], text[span[1] :]
        block = text[span[0] + len(BEGIN) : span[1] - len(END)]
        block = block.removeprefix("\n").removesuffix("\n")
        above, below = above.removesuffix(SEP), below.removeprefix(SEP)  # the separators join() puts
    else:
        # No block yet. A model card written before blocks existed stood at the very start and
        # is quantgate's; everything else (including older gate notes) is kept as it is.
        above, block, below = "", "", text
        legacy = own is None and LEGACY_CARD.match(text) and (owner is None or text.startswith(f"## {owner}: "))
        if legacy and LEGACY_CARD_END in text:
            block, below = text.split(LEGACY_CARD_END, 1)
            block += LEGACY_CARD_END
            below = below.removeprefix(SEP)
    card, *notes = block.split(NOTE_MARK)
    return Parts(above, card, [NOTE_MARK + n for n in notes], below)


def join(parts: Parts, limit: int = DESCRIPTION_LIMIT) -> str:
    """The description with the block fitted into what the person's text leaves of ``limit``."""
    return compose(parts, limit)[0]


def compose(parts: Parts, limit: int = DESCRIPTION_LIMIT) -> tuple[str, str]:
    """:func:`join`, and what the version's ``description_block_sha256`` tag is to hold: the
    SHA-256 of the block it wrote, or :data:`NO_BLOCK` when none fitted (so that a person's copy
    of an earlier block never matches a digest left behind)."""
    above = parts.above + SEP if parts.above else ""
    below = SEP + parts.below if parts.below else ""
    room = limit - len(above) - len(below) - len(BEGIN) - len(END) - 2
    card, notes = parts.card, list(parts.notes)
    while len(notes) > 1 and len(card) + sum(map(len, notes)) > room:
        notes.pop(0)
    if card and len(card) + sum(map(len, notes)) > room:
        card = ""
    if notes and sum(map(len, notes)) > room:
        notes = [notes[-1][: max(room, 0)]]
    block = card + "".join(notes)
    if not block or room <= 0:
        return parts.above + (SEP if parts.above and parts.below else "") + parts.below, NO_BLOCK  # their text alone
    written = f"{BEGIN}\n{block}\n{END}"
    return f"{above}{written}{below}", block_sha256(written)


def put_card(
    description: str | None,
    card: str,
    *,
    owner: str | None = None,
    own: str | None = None,
    limit: int = DESCRIPTION_LIMIT,
) -> tuple[str, str]:
    """Put (or replace) the model card in quantgate's block; keep its notes and everything else.
    Returns the description and its block's tag (:func:`compose`; keep it, pass it back as ``own``)."""
    parts = split(description, owner, own)
    parts.card = card
    return compose(parts, limit)


def put_note(
    description: str | None,
    note: str,
    *,
    owner: str | None = None,
    own: str | None = None,
    limit: int = DESCRIPTION_LIMIT,
) -> tuple[str, str]:
    """Add a gate note at the end of quantgate's block; keep everything a person wrote.
    Returns the description and its block's tag (:func:`compose`; keep it, pass it back as ``own``)."""
    parts = split(description, owner, own)
    if parts.card == "" and not parts.notes and not parts.above:  # no block yet: notes go after the text
        parts.above, parts.below = parts.below, ""
    parts.notes.append(note)
    return compose(parts, limit)
