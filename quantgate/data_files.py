"""Reading a dataset's rows: CSV / JSONL / Parquet files, a folder of split files, or a
Hugging Face dataset, each checked row by row (:func:`quantgate.data_checks.validate_texts`);
and the ``labels.txt`` names file found beside local data."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from quantgate import labels as labelsets
from quantgate.data_checks import DataError, validate_texts

FORMATS = (".csv", ".jsonl", ".json", ".parquet")


def _read_file(path: Path) -> tuple[pd.DataFrame, int]:
    """The file's rows and the 1-based number of its first data row (CSV: after the header)."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            # keep_default_na=False: an empty cell stays "" (reported as empty text), not NaN.
            return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8"), 1
        if suffix in (".jsonl", ".json"):
            return pd.read_json(path, lines=suffix == ".jsonl", dtype=False), 1
        if suffix == ".parquet":
            return pd.read_parquet(path), 1
    except (ValueError, UnicodeDecodeError, OSError, pd.errors.ParserError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path}: cannot be read as {suffix[1:]}: {first}") from exc
    except Exception as exc:  # pyarrow and friends raise their own types for a corrupt file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path}: cannot be read as {suffix[1:]}: {first}") from exc
    raise DataError(f"{path}: unsupported format {suffix!r}; use one of {list(FORMATS)}")


def _find_split_file(folder: Path, name: str) -> Path | None:
    """The one file of split ``name`` in ``folder`` (any supported format), or None."""
    found = [folder / f"{name}{ext}" for ext in FORMATS if (folder / f"{name}{ext}").is_file()]
    if len(found) > 1:
        raise DataError(f"{folder}: several files for split {name!r}: {[p.name for p in found]}")
    return found[0] if found else None


def _read_texts(file: Path, cols: dict) -> pd.DataFrame:
    """The file's texts and raw labels, checked row by row."""
    frame, first_row = _read_file(file)
    return validate_texts(frame, str(file), first_row=first_row, **cols)


def read_local(path: Path, splits: tuple[str, ...], cols: dict) -> dict[str, tuple[pd.DataFrame, str]]:
    """Checked text and raw labels per split: ``(frame, origin)``. A single file comes back as
    one ``"all"`` entry, split once the label list is known."""
    if not path.is_dir():
        return {"all": (_read_texts(path, cols), str(path))}
    out = {}
    for name in splits:
        file = _find_split_file(path, name)
        if file is None:
            raise DataError(f"{path}: no file for split {name!r} (expected {name}.csv, {name}.jsonl or {name}.parquet)")
        out[name] = (_read_texts(file, cols), str(file))
    return out


def read_hub(dataset_id: str, splits: tuple[str, ...], cols: dict):
    """Checked text and raw labels per split of a Hugging Face dataset, and its ClassLabel names (or None)."""
    try:
        import datasets  # imported here: only this source needs it
    except ImportError as exc:  # pragma: no cover - datasets is a dependency
        raise DataError("loading a Hugging Face dataset needs the 'datasets' package") from exc
    try:
        ds = datasets.load_dataset(dataset_id)
    except Exception as exc:  # the hub raises many types; the user needs the message
        raise DataError(
            f"{dataset_id!r} is not a local file or folder, and loading it as a Hugging Face "
            f"dataset failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}. "
            "Offline machines can use local files, the bundled datasets (a folder of data/) and a warm cache."
        ) from exc
    out, names = {}, None
    for name in splits:
        if name not in ds:
            raise DataError(f"Hugging Face dataset {dataset_id!r} has no split {name!r}: {list(ds)}")
        part = ds[name]
        feature = part.features.get(cols["label_column"])
        if feature is not None and hasattr(feature, "names"):  # ClassLabel ints -> names
            names = list(feature.names)
        origin = f"hf:{dataset_id}[{name}]"
        out[name] = (validate_texts(part.to_pandas(), origin, **cols), origin)
    return out, names


def names_beside(path: Path | None) -> tuple[list[str] | None, str]:
    """A ``labels.txt`` beside the data (in the folder, or beside the single file)."""
    if path is None:
        return None, ""
    folder = path if path.is_dir() else path.parent
    file = folder / labelsets.LABEL_NAMES_FILE
    if file.is_file():
        try:
            return labelsets.read_names_file(file), str(file)
        except ValueError as exc:
            raise DataError(str(exc)) from None
    return None, ""
