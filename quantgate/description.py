"""A version description that people and quantgate share: quantgate owns one delimited block.

The block holds the model card (written by ``evaluate``) and the gate's verdict notes (one per
decision, oldest first). Everything outside it - above or below - is a person's text and is
kept whole, character for character. When the description would exceed the store's limit,
only quantgate's own block shrinks: oldest notes first, then the card, then the end of the
newest note; the full verdicts stay in each promote run's ``decision.json`` and the figures in
the evaluation run. Pure text functions.
"""

from __future__ import annotations

import bisect
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field

# MLflow's SQL schema declares model_versions.description as VARCHAR(5000): PostgreSQL and
# MySQL enforce it (SQLite does not), so quantgate stays within it on every store.
DESCRIPTION_LIMIT = 5000
BEGIN = (
    "<!-- quantgate:begin (model card and gate verdicts, rewritten by quantgate; text outside this block is kept) -->"
)
END = "<!-- quantgate:end -->"
WRITE = "<!-- quantgate:write {} of {} -->"  # the block's last line: its write number, and whose block it is
# a write number is a decimal string of any length (compared by length, then digits, never
# converted to int: a forged 10**12 must not stop the count or overflow a parser)
WRITE_LINE = re.compile(r"\n<!-- quantgate:write (0|[1-9][0-9]*) of (.*) -->\n\Z")
NOTE_MARK = "\n\n### Gate "  # every gate note starts with this
SEP = "\n\n"  # between a person's text and the block


@dataclass
class Parts:
    above: str = ""  # a person's text before the block
    card: str = ""
    notes: list[str] = field(default_factory=list)
    below: str = ""  # a person's text after the block
    written: str = "0"  # the highest write number of the owner's block-shaped pairs in the text (the next is one more)
    # the exact whitespace between the person's text and the block, as found by split(); None
    # (a new block) means SEP where there is text on that side
    above_sep: str | None = None
    below_sep: str | None = None


NO_BLOCK = "none: no room for quantgate's block"  # the tag's value when the person's text left no room


Seal = Callable[[str], str]  # a written block -> what the version's tag records for it


def block_sha256(block: str) -> str:
    """SHA-256 of a whole block as written (BEGIN line to END line): what the version's
    ``description_block_sha256`` tag records, so the block can be told from a copy of another."""
    return hashlib.sha256(block.encode("utf-8")).hexdigest()


Pair = tuple[int, int, str, str]  # start of BEGIN, end of END, write number, owner


def _pairs(text: str) -> list[Pair]:
    """The block-shaped pairs in ``text``: ``(start of BEGIN, end of END, write number, owner)``.

    The block is written as a BEGIN line, the card and notes, a write-number line and an END
    line, with no marker inside it; a person may quote either marker, or a whole block, in their
    own text above or below, so the candidates are the BEGIN ... END pairs with no marker between
    them whose BEGIN starts a line, whose END ends one, and whose content starts as quantgate's
    does (a card heading or a gate note). A pair without a write-number line (quantgate before
    it kept one, or a person's sketch) is number 0 of no one."""
    begins = [m.start() for m in re.finditer(re.escape(BEGIN), text)]
    ends = [m.start() for m in re.finditer(re.escape(END), text)]
    pairs = []
    for i, start in enumerate(begins):  # each BEGIN with the first END after it: no marker between
        j = bisect.bisect_left(ends, start + len(BEGIN))
        if j == len(ends):
            break
        end = ends[j]
        if i + 1 < len(begins) and begins[i + 1] < end:
            continue
        inner = text[start + len(BEGIN) : end]
        on_lines = (start == 0 or text[start - 1] == "\n") and text[end + len(END) : end + len(END) + 1] in ("", "\n")
        if on_lines and OWN_BLOCK.match(inner) and inner.endswith("\n"):
            number = WRITE_LINE.search(inner)
            pairs.append((start, end + len(END), *(number.groups() if number else ("0", ""))))
    return pairs


def _block_span(text: str, pairs: list[Pair], own: str | None, seal: Seal) -> tuple[int, int] | None:
    """Where quantgate's block is: ``(start of BEGIN, end of END)``, or ``None`` for no block.

    ``own``, the version's ``description_block_sha256`` tag, alone decides among the block-shaped
    ``pairs`` of ``text`` (:func:`_pairs`): the pair whose seal (``seal``: :func:`block_sha256`, or with an
    evidence key an HMAC bound to the version) is exactly the tag is quantgate's (of two
    identical ones, none: the forty-first adversarial run quoted the current block verbatim above
    it, and the first copy, the person's, was rewritten), provided no pair of the same owner (the
    version, as the caller names it) in the text carries a higher write number; another version's
    quoted block does not count.
    Without one - no tag, the block edited or removed, no room (:data:`NO_BLOCK`), a tag someone
    pointed elsewhere, or put back to the seal of an older block that a person quoted (the
    fourteenth adversarial run: every seal ever issued stays valid, but a quote of an older
    block is older than the block written after it) - there is none, and a new block is
    written. Guessing instead (by the card's heading, say) would rewrite a person's copy of the
    block; not guessing at worst leaves an old or edited block behind as their text."""
    if not own:
        return None
    sealed = [(start, end, number, owner) for start, end, number, owner in pairs if seal(text[start:end]) == own]
    if len(sealed) != 1:  # none, or identical copies: a person's verbatim quote cannot be told from the block
        return None
    start, end, number, owner = sealed[0]
    return (start, end) if number == _newest(pairs, owner) else None


def pair_seals(description: str | None, seal: Seal = block_sha256, owner: str = "") -> list[str]:
    """The seals of ``owner``'s block-shaped pairs in ``description``: once quantgate has written
    a newer block, none of them names its block any more (:mod:`quantgate.block_memory`)."""
    text = description or ""
    return [seal(text[start:end]) for start, end, _, whose in _pairs(text) if whose == owner]


def _newest(pairs: list[Pair], owner: str) -> str:
    return max((number for *_, number, whose in pairs if whose == owner), key=lambda n: (len(n), n), default="0")


def _successor(number: str) -> str:
    """``number`` + 1, on decimal strings of any length."""
    head = number.rstrip("9")
    nines = len(number) - len(head)
    return (head[:-1] + str(int(head[-1]) + 1) if head else "1") + "0" * nines


# What quantgate's own block starts with: its card, or (with the card dropped for room) a note.
OWN_BLOCK = re.compile(r"\n(## .+ v\d+: .+\n\n|\n\n### Gate )")


def split(description: str | None, own: str | None, seal: Seal = block_sha256, owner: str = "") -> Parts:
    """Separate a description into a person's text and quantgate's block (``own``, ``seal``:
    see :func:`_block_span`; ``owner``: whose block, e.g. ``"name v3"``). With no block found,
    all of it is the person's text."""
    text = description or ""
    pairs = _pairs(text)
    written = _newest(pairs, owner)
    span = _block_span(text, pairs, own, seal)
    if not span:
        return Parts(below=text, written=written)
    above, below = text[: span[0]], text[span[1] :]
    block = WRITE_LINE.sub("\n", text[span[0] + len(BEGIN) : span[1] - len(END)])
    block = block.removeprefix("\n").removesuffix("\n")
    # the separators compose() puts, taken off so that the person's text is theirs alone; what
    # stands there instead (a person's single newline, or blank lines alone) is kept as it is,
    # so that writing the block again changes no character outside it
    above_sep = SEP if above.endswith(SEP) else ""
    below_sep = SEP if below.startswith(SEP) else ""
    above, below = above.removesuffix(above_sep), below.removeprefix(below_sep)
    card, *notes = block.split(NOTE_MARK)
    return Parts(above, card, [NOTE_MARK + n for n in notes], below, written, above_sep, below_sep)


def join(parts: Parts, limit: int = DESCRIPTION_LIMIT) -> str:
    """The description with the block fitted into what the person's text leaves of ``limit``."""
    return compose(parts, limit)[0]


def compose(
    parts: Parts, limit: int = DESCRIPTION_LIMIT, seal: Seal = block_sha256, owner: str = ""
) -> tuple[str, str]:
    """:func:`join`, and what the version's ``description_block_sha256`` tag is to hold: the
    seal of the block it wrote (its SHA-256 unless ``seal`` says otherwise), or :data:`NO_BLOCK`
    when none fitted (so that a person's copy of an earlier block never matches a tag left behind)."""
    above = parts.above + (parts.above_sep if parts.above_sep is not None else SEP if parts.above else "")
    below = (parts.below_sep if parts.below_sep is not None else SEP if parts.below else "") + parts.below
    number = WRITE.format(_successor(parts.written), owner)  # newer than every pair of the owner's, quotes included
    room = limit - len(above) - len(below) - len(BEGIN) - len(number) - len(END) - 3
    card, notes = parts.card, list(parts.notes)
    while len(notes) > 1 and len(card) + sum(map(len, notes)) > room:
        notes.pop(0)
    if card and len(card) + sum(map(len, notes)) > room:
        card = ""
    if notes and sum(map(len, notes)) > room:
        notes = [notes[-1][: max(room, 0)]]
    block = card + "".join(notes)
    if not block or room <= 0:  # their text alone: a separator only where their texts would touch
        touch = parts.above and parts.below and not parts.above.endswith("\n") and not parts.below.startswith("\n")
        return parts.above + (SEP if touch else "") + parts.below, NO_BLOCK
    written = f"{BEGIN}\n{block}\n{number}\n{END}"
    return f"{above}{written}{below}", seal(written)


def put_card(
    description: str | None,
    card: str,
    *,
    own: str | None,
    seal: Seal = block_sha256,
    owner: str = "",
    limit: int = DESCRIPTION_LIMIT,
) -> tuple[str, str]:
    """Put (or replace) the model card in quantgate's block; keep its notes and everything else.
    Returns the description and its block's tag (:func:`compose`; keep it, pass it back as ``own``)."""
    parts = split(description, own, seal, owner)
    parts.card = card
    return compose(parts, limit, seal, owner)


def put_note(
    description: str | None,
    note: str,
    *,
    own: str | None,
    seal: Seal = block_sha256,
    owner: str = "",
    limit: int = DESCRIPTION_LIMIT,
) -> tuple[str, str]:
    """Add a gate note at the end of quantgate's block; keep everything a person wrote.
    Returns the description and its block's tag (:func:`compose`; keep it, pass it back as ``own``)."""
    parts = split(description, own, seal, owner)
    if parts.card == "" and not parts.notes and not parts.above:  # no block yet: notes go after the text
        parts.above, parts.below = parts.below, ""
    parts.notes.append(note)
    return compose(parts, limit, seal, owner)
