"""The data layer: load, validate and split labelled headline datasets.

Sources, in the order they are tried:

* ``news9`` (default): the bundled, hand-written dataset in ``data/news9/``;
* a local path: a CSV / JSONL / Parquet file, or a folder holding ``train``,
  ``validation`` and ``test`` files in one of those formats. A single file is split
  70/10/20 the same deterministic, stratified way news9 was;
* anything else is taken as a Hugging Face dataset id (``hf:`` prefix optional), loaded
  with the ``datasets`` library - this needs the network or a warm local cache.

Every loader ends in :func:`validate_split`, which fails with a message naming the file
and the row. Label ids always come from :data:`flows.labels.LABELS`.
"""
from __future__ import annotations

import hashlib
import math
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from flows.errors import UserError
from flows.labels import LABEL2ID, LABELS

SPLITS = ("train", "validation", "test")
SPLIT_FRACTIONS = (0.7, 0.1, 0.2)
NEWS9_DIR = Path(__file__).resolve().parent.parent / "data" / "news9"
_FORMATS = (".csv", ".jsonl", ".json", ".parquet")


class DataError(UserError):
    """A dataset that cannot be used; the message names the file and the row."""


@dataclass(frozen=True)
class Split:
    name: str
    frame: pd.DataFrame  # columns: text (str), label (str), label_id (int)
    origin: str  # the file (or dataset id) it came from, for messages

    @property
    def texts(self) -> list[str]:
        return self.frame["text"].tolist()

    @property
    def label_ids(self) -> list[int]:
        return self.frame["label_id"].tolist()

    def __len__(self) -> int:
        return len(self.frame)


@dataclass(frozen=True)
class Dataset:
    source: str
    splits: dict[str, Split]

    def __getitem__(self, name: str) -> Split:
        return self.splits[name]

    def counts(self) -> pd.DataFrame:
        """Items per label (rows, in label order) and split (columns), with totals."""
        table = pd.DataFrame(
            {name: split.frame["label"].value_counts() for name, split in self.splits.items()}
        ).reindex(list(LABELS)).fillna(0).astype(int)
        table["total"] = table.sum(axis=1)
        return table


# --------------------------------------------------------------------------- text maths
def normalise(text: str) -> str:
    """Lower-case, drop punctuation and symbols, collapse whitespace (the duplicate key)."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = re.sub(r"['\u2019]", "", text)  # "bank's" -> "banks", not "bank s"
    text = "".join(" " if unicodedata.category(ch)[0] in "PS" else ch for ch in text)
    return re.sub(r"\s+", " ", text).strip()


def duplicate_groups(texts: list[str]) -> list[list[int]]:
    """Indexes of texts that are equal after :func:`normalise`, one list per duplicate group."""
    seen: dict[str, list[int]] = {}
    for i, text in enumerate(texts):
        seen.setdefault(normalise(text), []).append(i)
    return [idx for idx in seen.values() if len(idx) > 1]


def near_duplicates(texts: list[str], threshold: float = 0.8) -> list[tuple[int, int, float]]:
    """Pairs whose word sets have Jaccard similarity >= threshold (exact duplicates included)."""
    words = [frozenset(normalise(t).split()) for t in texts]
    # An inverted index keeps this near-linear: only pairs sharing a rare-ish word are compared.
    index: dict[str, list[int]] = {}
    for i, ws in enumerate(words):
        for w in ws:
            index.setdefault(w, []).append(i)
    pairs: list[tuple[int, int, float]] = []
    for i, ws in enumerate(words):
        candidates = set()
        for w in ws:
            posting = index[w]
            if len(posting) <= 200:  # very common words say nothing about near-duplication
                candidates.update(j for j in posting if j > i)
        for j in candidates:
            union = len(ws | words[j])
            score = len(ws & words[j]) / union if union else 1.0
            if score >= threshold:
                pairs.append((i, j, round(score, 3)))
    return pairs


def stable_key(text: str) -> str:
    return hashlib.sha256(normalise(text).encode("utf-8")).hexdigest()


def stratified_split(frame: pd.DataFrame, fractions=SPLIT_FRACTIONS) -> dict[str, pd.DataFrame]:
    """Deterministic stratified split: within each label, order by a hash of the normalised
    text and cut at the fractions. Independent of row order; adding an item moves no other."""
    if abs(sum(fractions) - 1.0) > 1e-9 or len(fractions) != len(SPLITS):
        raise ValueError(f"fractions must be three numbers summing to 1, got {fractions}")
    parts: dict[str, list[pd.DataFrame]] = {name: [] for name in SPLITS}
    for _, group in frame.groupby("label", sort=False):
        group = group.assign(_key=group["text"].map(stable_key)).sort_values("_key")
        n = len(group)
        n_train = round(n * fractions[0])
        n_val = round(n * fractions[1])
        cuts = (0, n_train, n_train + n_val, n)
        for name, lo, hi in zip(SPLITS, cuts, cuts[1:]):
            parts[name].append(group.iloc[lo:hi].drop(columns="_key"))
    order = {label: i for i, label in enumerate(LABELS)}
    out = {}
    for name, frames in parts.items():
        df = pd.concat(frames) if frames else frame.iloc[0:0]
        df = df.assign(_o=df["label"].map(order).fillna(len(order)), _k=df["text"].map(stable_key))
        out[name] = df.sort_values(["_o", "_k"]).drop(columns=["_o", "_k"]).reset_index(drop=True)
    return out


# --------------------------------------------------------------------------- validation
def validate_split(frame: pd.DataFrame, origin: str, *, first_row: int = 1) -> pd.DataFrame:
    """Check columns, text and labels; return a clean frame with ``label_id`` added.

    ``first_row`` is the 1-based row number of the frame's first data row in ``origin``
    (rows are counted after any header), so messages point at the right place.
    """
    missing = [c for c in ("text", "label") if c not in frame.columns]
    if missing:
        raise DataError(
            f"{origin}: missing column(s) {missing}; found {list(map(str, frame.columns))}. "
            "A dataset needs a 'text' and a 'label' column."
        )
    if frame.empty:
        raise DataError(f"{origin}: no rows")
    frame = frame.reset_index(drop=True)
    for i, (text, label) in enumerate(zip(frame["text"], frame["label"])):
        row = i + first_row
        if text is None or (isinstance(text, float) and math.isnan(text)):
            raise DataError(f"{origin}, row {row}: text is missing (null)")
        if not isinstance(text, str):
            raise DataError(
                f"{origin}, row {row}: text must be a string, got {type(text).__name__} {text!r}"
            )
        if not text.strip():
            raise DataError(f"{origin}, row {row}: text is empty")
        if not isinstance(label, str) or label not in LABEL2ID:
            raise DataError(
                f"{origin}, row {row}: label {label!r} is not one of the {len(LABELS)} labels "
                f"{list(LABELS)}"
            )
    clean = frame[["text", "label"]].copy()
    clean["text"] = clean["text"].str.strip()
    clean["label_id"] = clean["label"].map(LABEL2ID).astype(int)
    return clean


def check_no_overlap(splits: dict[str, Split]) -> None:
    """Refuse a test (or validation) split that shares a text with train, after normalisation."""
    if "train" not in splits:
        return
    train_keys = {normalise(t): i for i, t in enumerate(splits["train"].texts)}
    for name in ("test", "validation"):
        if name not in splits:
            continue
        hits = [
            (i, train_keys[normalise(t)])
            for i, t in enumerate(splits[name].texts)
            if normalise(t) in train_keys
        ]
        if hits:
            i, j = hits[0]
            raise DataError(
                f"{name} split overlaps train in {len(hits)} text(s); first: "
                f"{splits[name].texts[i]!r} ({splits[name].origin}, row {i + 1} = "
                f"{splits['train'].origin}, row {j + 1})"
            )


# --------------------------------------------------------------------------- readers
def _read_file(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            # keep_default_na=False: an empty cell stays "" (reported as empty text), not NaN.
            return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
        if suffix in (".jsonl", ".json"):
            return pd.read_json(path, lines=suffix == ".jsonl", dtype=False)
        if suffix == ".parquet":
            return pd.read_parquet(path)
    except (ValueError, UnicodeDecodeError, OSError) as exc:
        raise DataError(f"{path}: cannot be read as {suffix[1:]}: {exc}") from exc
    raise DataError(f"{path}: unsupported format {suffix!r}; use one of {list(_FORMATS)}")


def _find_split_file(folder: Path, name: str) -> Path | None:
    found = [folder / f"{name}{ext}" for ext in _FORMATS if (folder / f"{name}{ext}").is_file()]
    if len(found) > 1:
        raise DataError(f"{folder}: several files for split {name!r}: {[p.name for p in found]}")
    return found[0] if found else None


def _load_local(path: Path, splits: tuple[str, ...]) -> dict[str, Split]:
    if path.is_dir():
        out = {}
        for name in splits:
            file = _find_split_file(path, name)
            if file is None:
                raise DataError(
                    f"{path}: no file for split {name!r} (expected {name}.csv, {name}.jsonl "
                    f"or {name}.parquet)"
                )
            frame = validate_split(_read_file(file), str(file))
            out[name] = Split(name, frame, str(file))
        return out
    frame = validate_split(_read_file(path), str(path))
    parts = stratified_split(frame)
    return {name: Split(name, parts[name], f"{path} [{name} part]") for name in splits}


def _load_hub(dataset_id: str, splits: tuple[str, ...]) -> dict[str, Split]:
    try:
        import datasets  # imported here: only this source needs it
    except ImportError as exc:  # pragma: no cover - datasets is a dependency
        raise DataError("loading a Hugging Face dataset needs the 'datasets' package") from exc
    try:
        ds = datasets.load_dataset(dataset_id)
    except Exception as exc:  # the hub raises many types; the user needs the message
        raise DataError(
            f"{dataset_id!r} is not a local file or folder, and loading it as a Hugging Face "
            f"dataset failed: {exc}. Offline machines can only use local files or 'news9'."
        ) from exc
    out = {}
    for name in splits:
        if name not in ds:
            raise DataError(f"Hugging Face dataset {dataset_id!r} has no split {name!r}: {list(ds)}")
        part = ds[name]
        frame = part.to_pandas()
        feature = part.features.get("label")
        if feature is not None and hasattr(feature, "names"):  # ClassLabel ints -> names
            frame["label"] = [feature.names[i] for i in frame["label"]]
        origin = f"hf:{dataset_id}[{name}]"
        out[name] = Split(name, validate_split(frame, origin), origin)
    return out


def load_dataset(source: str = "news9", splits: tuple[str, ...] = SPLITS) -> Dataset:
    """Load and validate ``splits`` of a dataset (see the module docstring for sources)."""
    unknown = [s for s in splits if s not in SPLITS]
    if unknown:
        raise DataError(f"unknown split(s) {unknown}; splits are {list(SPLITS)}")
    if source == "news9":
        loaded = _load_local(NEWS9_DIR, splits)
    elif source.startswith("hf:"):
        loaded = _load_hub(source[3:], splits)
    elif Path(source).expanduser().exists():
        loaded = _load_local(Path(source).expanduser(), splits)
    elif source.startswith((".", "/", "~")) or Path(source).suffix.lower() in _FORMATS:
        raise DataError(f"{source}: no such file or folder")
    else:
        loaded = _load_hub(source, splits)
    check_no_overlap(loaded)
    return Dataset(source, loaded)


def dataset_digest(dataset: Dataset) -> str:
    """SHA-256 over every split's texts and labels: identifies the data a step consumed."""
    h = hashlib.sha256()
    for name in sorted(dataset.splits):
        for text, label in zip(dataset[name].texts, dataset[name].frame["label"]):
            h.update(f"{name}\t{label}\t{text}\n".encode("utf-8"))
    return h.hexdigest()
