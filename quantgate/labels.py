"""Label lists: where a dataset's labels come from, and the label map saved with every model.

There is no module-level label list: the labels belong to the dataset (its training split,
an explicit ``--labels a,b,c``, or a ``labels.txt`` beside the data), and every model carries
its own label map. Its order is part of the model contract: logit i means ``labels[i]``.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Iterable, Sequence
from pathlib import Path

LABEL_NAMES_FILE = "labels.txt"  # one label a line, in logit order, beside a dataset's files


def check_label_list(labels: Sequence[str], where: str) -> list[str]:
    """A usable label list: non-empty strings, no duplicates, no surrounding spaces."""
    labels = list(labels)
    for i, name in enumerate(labels):
        if not isinstance(name, str) or not name.strip() or name != name.strip():
            raise ValueError(f"{where}: label {i + 1} ({name!r}) must be a non-empty string without surrounding spaces")
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        raise ValueError(f"{where}: duplicate label(s) {dupes}")
    return labels


def read_names_file(path: str | Path) -> list[str]:
    """A names file: one label a line (blank lines and ``#`` comments ignored)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read the label names: {exc}") from None
    names = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not names:
        raise ValueError(f"{path}: no label names (one a line)")
    return check_label_list(names, str(path))


def read_as_file(value: str | None) -> bool:
    """Whether :func:`parse_labels_option` reads ``value`` as a names file rather than a list:
    it tries the file first, so a path whose folder name holds a comma is still a file (the
    twenty-fourth adversarial run read the evidence key through ``/tmp/x,y/../../…``)."""
    if value is None or not str(value).strip():
        return False
    value = str(value).strip()
    return Path(value).expanduser().is_file() or "," not in value


def parse_labels_option(value: str | list[str] | None) -> tuple[list[str] | None, str]:
    """``--labels``: empty (None), the path of a names file, or ``a,b,c`` (or, from code that
    pinned it so, a list). Returns the list and where it came from (for messages)."""
    if isinstance(value, (list, tuple)):
        return check_label_list([str(x).strip() for x in value], f"--labels {','.join(map(str, value))!r}"), "--labels"
    if value is None or not str(value).strip():
        return None, ""
    value = str(value).strip()
    if Path(value).expanduser().is_file():
        return read_names_file(Path(value).expanduser()), value
    if "," not in value and Path(value).suffix:  # looks like a file name that is not there
        raise ValueError(f"--labels {value}: no such names file (give a file, or labels as a,b,c)")
    return check_label_list([x.strip() for x in value.split(",")], f"--labels {value!r}"), "--labels"


def _as_int(value) -> int | None:
    """An integer label id, or None: ints, integral floats, and strings of digits."""
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real) and math.isfinite(value) and float(value).is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def label_name(value, names: Sequence[str] | None) -> str:
    """The name of one raw label: a name of ``names``, or an integer id into ``names``.
    Without ``names`` a label is its own name. Raises ValueError with the reason."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        raise ValueError("label is missing (null)")
    if names is not None:
        if isinstance(value, str) and value.strip() in names:
            return value.strip()
        i = _as_int(value)
        if i is not None:
            if 0 <= i < len(names):
                return names[i]
            raise ValueError(f"label id {i} is outside 0..{len(names) - 1} of the {len(names)} label names")
        raise ValueError(f"label {value!r} is not one of the {len(names)} labels {list(names)[:20]}")
    i = _as_int(value)
    if i is not None and not isinstance(value, str):
        return str(i)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"label must be a non-empty string or an integer id, got {value!r}")
    return value.strip()


def labels_from(values: Iterable[str]) -> list[str]:
    """The label list a training split implies: its distinct labels, sorted (numerically when
    they are all integers, so "2" comes before "10")."""
    distinct = set(values)
    if distinct and all(x.isdigit() for x in distinct):
        return sorted(distinct, key=int)
    return sorted(distinct)


def label_map(labels: Sequence[str]) -> dict[str, str]:
    """The label map as saved with every model: {"0": "World", ...} (JSON keys are strings)."""
    return {str(i): name for i, name in enumerate(check_label_list(labels, "label map"))}


def save_label_map(path: str | Path, labels: Sequence[str]) -> Path:
    path = Path(path)
    path.write_text(json.dumps(label_map(labels), indent=2) + "\n", encoding="utf-8")
    return path


def load_label_map(path: str | Path) -> list[str]:
    """Read a saved label map and return the labels in id order; refuses gaps or duplicates.
    The pyfunc's own reader, so a model and the steps read a label map the same way."""
    from quantgate.serving_model import read_label_map

    return read_label_map(path)
