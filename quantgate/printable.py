"""Text quoted from the store, made safe to print: any store writer sets tags, names and ids."""

from __future__ import annotations


def shown(text: object) -> str:
    """Text quoted from the store (a tag any writer sets) as one printable line: line breaks and
    control characters written as escapes. The fortieth adversarial run put a line break and a
    fake "Gate passed" note into an ``eval_run_id`` tag, which the gate quoted into its note,
    and terminal escapes that erased ``REJECTED`` from the key holder's screen; the forty-third
    had a ``variant`` tag's escapes redraw a row of the keyed ``compare`` table."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in str(text))
