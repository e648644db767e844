"""Row-by-row checks of a labelled text frame: every text present and non-empty, every label
a known name (or an integer id into the label list). Every problem is a :class:`DataError`
naming the file (or dataset id) and the row."""

from __future__ import annotations

import math

import pandas as pd

from quantgate import labels as labelsets
from quantgate.errors import UserError


class DataError(UserError):
    """A dataset that cannot be used; the message names the file and the row."""


def _is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def validate_texts(
    frame: pd.DataFrame, origin: str, *, text_column: str = "text", label_column: str = "label", first_row: int = 1
) -> pd.DataFrame:
    """Check the columns and every text; return ``text``, raw ``label`` and ``row`` columns.

    ``first_row`` is the 1-based row number of the frame's first data row in ``origin``
    (rows are counted after any header), so messages point at the right place.
    """
    wanted = [text_column, label_column]
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise DataError(
            f"{origin}: missing column(s) {missing}; found {list(map(str, frame.columns))}. "
            f"Name the text and label columns with --text-column / --label-column "
            f"(now {text_column!r} / {label_column!r})"
        )
    if text_column == label_column:
        raise DataError(f"{origin}: the text and the label column are both {text_column!r}")
    if frame.empty:
        raise DataError(f"{origin}: no rows")
    frame = frame.reset_index(drop=True)
    for i, text in enumerate(frame[text_column]):
        row = i + first_row
        if _is_missing(text):
            raise DataError(f"{origin}, row {row}: text is missing (null)")
        if not isinstance(text, str):
            raise DataError(f"{origin}, row {row}: text must be a string, got {type(text).__name__} {text!r}")
        if not text.strip():
            raise DataError(f"{origin}, row {row}: text is empty")
    return pd.DataFrame(
        {
            "text": frame[text_column].str.strip(),
            "label": frame[label_column].tolist(),
            "row": range(first_row, first_row + len(frame)),
        }
    )


def name_labels(frame: pd.DataFrame, origin: str, names: list[str] | None) -> pd.DataFrame:
    """Turn every raw label into its name: a name of ``names``, or an integer id into it.
    Without ``names`` a label is its own name (integers become "0", "1", ...)."""
    out = []
    for value, row in zip(frame["label"], frame["row"]):
        try:
            out.append(labelsets.label_name(value, names))
        except ValueError as exc:
            raise DataError(f"{origin}, row {row}: {exc}") from None
    return frame.assign(label=out)


def check_labels(frame: pd.DataFrame, origin: str, labels: list[str], where: str) -> None:
    """Refuse the first label that is not one of ``labels``; ``where`` says where the list came from."""
    known = set(labels)
    for label, row in zip(frame["label"], frame["row"]):
        if label not in known:
            shown = labels if len(labels) <= 20 else labels[:20] + ["..."]
            raise DataError(
                f"{origin}, row {row}: label {label!r} is not one of the {len(labels)} labels {shown} ({where})"
            )


def validate_split(
    frame: pd.DataFrame, origin: str, labels: list[str] | None = None, *, first_row: int = 1
) -> pd.DataFrame:
    """One frame with ``text`` and ``label`` columns, checked row by row; with ``labels``,
    every label must be one of them and ``label_id`` is added."""
    clean = name_labels(validate_texts(frame, origin, first_row=first_row), origin, labels)
    if labels is not None:
        check_labels(clean, origin, list(labels), "the dataset's label list")
        index = {name: i for i, name in enumerate(labels)}
        clean["label_id"] = clean["label"].map(index).astype(int)
    return clean
