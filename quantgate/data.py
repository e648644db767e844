"""The data layer: load, validate and split labelled text-classification datasets.

Sources, in the order they are tried:

* ``news9`` (default): the bundled, hand-written dataset in ``data/news9/``;
* ``hf:<id>``: a Hugging Face dataset, loaded with the ``datasets`` library (network or a warm
  local cache);
* the name of another bundled dataset, a folder of ``data/`` (``support3``); it wins over a
  folder of the same name in the working folder (``./support3`` names that one), which anyone
  who can write there could have made;
* a local path: a CSV / JSONL / Parquet file, or a folder holding ``train``, ``validation`` and
  ``test`` files in one of those formats. A single file is split 70/10/20 the same
  deterministic, stratified way news9 was;
* anything else is taken as a Hugging Face dataset id, as with ``hf:`` (a local path of the same
  name wins, as in ``datasets``: write ``hf:<id>`` to mean the hub).

Columns are ``text`` and ``label`` unless ``text_column`` / ``label_column`` say otherwise.
The label set belongs to the dataset (:func:`quantgate.labels.resolve_labels`): ``labels=`` (``a,b,c``
or a names file), else a ``labels.txt`` beside the data, else the training split's labels,
sorted. Labels may be names or integer ids into that list. Every problem is a
:class:`DataError` naming the file and the row. Texts repeated across splits are refused,
or with ``dedupe=True`` dropped from the later split (train, then validation, then test).
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from quantgate import labels as labelsets
from quantgate.data_checks import DataError, check_labels, name_labels
from quantgate.data_files import FORMATS, names_beside, read_hub, read_local

SPLITS = ("train", "validation", "test")
SPLIT_FRACTIONS = (0.7, 0.1, 0.2)
NEWS9_DIR = Path(__file__).resolve().parent.parent / "data" / "news9"
BUNDLED_DIR = NEWS9_DIR.parent  # data/: one folder per bundled dataset


def news9_labels() -> tuple[str, ...]:
    """news9's nine labels in logit order, from its own ``data/news9/labels.txt``."""
    return tuple(labelsets.read_names_file(NEWS9_DIR / labelsets.LABEL_NAMES_FILE))


@dataclass(frozen=True)
class Split:
    name: str
    frame: pd.DataFrame  # columns: text (str), label (str), label_id (int), row (1-based, in origin)
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
    labels: tuple[str, ...] = ()  # logit i means labels[i]
    dropped: dict[str, int] = field(default_factory=dict)  # per split: texts --dedupe removed

    def __getitem__(self, name: str) -> Split:
        return self.splits[name]

    def counts(self) -> pd.DataFrame:
        """Items per label (rows, in label order) and split (columns), with totals."""
        table = (
            pd.DataFrame({name: split.frame["label"].value_counts() for name, split in self.splits.items()})
            .reindex(list(self.labels))
            .fillna(0)
            .astype(int)
        )
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


def stratified_split(frame: pd.DataFrame, fractions=SPLIT_FRACTIONS, labels=None) -> dict[str, pd.DataFrame]:
    """Deterministic stratified split: within each label, order by a hash of the normalised
    text and cut at the fractions. Independent of row order; adding an item moves no other.
    Rows come out in ``labels`` order (default: sorted), then by hash."""
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
    order = {label: i for i, label in enumerate(labels if labels is not None else sorted(frame["label"].unique()))}
    out = {}
    for name, frames in parts.items():
        df = pd.concat(frames) if frames else frame.iloc[0:0]
        df = df.assign(_o=df["label"].map(order).fillna(len(order)), _k=df["text"].map(stable_key))
        out[name] = df.sort_values(["_o", "_k"]).drop(columns=["_o", "_k"]).reset_index(drop=True)
    return out


# --------------------------------------------------------------------------- texts shared by splits
def _overlap(splits: dict[str, Split], name: str, earlier: str) -> list[tuple[int, int]]:
    """(row index in ``name``, row index in ``earlier``) of texts equal after normalising."""
    keys: dict[str, int] = {}
    for j, t in enumerate(splits[earlier].texts):
        keys.setdefault(normalise(t), j)
    return [(i, keys[normalise(t)]) for i, t in enumerate(splits[name].texts) if normalise(t) in keys]


# Which split keeps a text that two splits share: the earlier one in this order.
_PRECEDENCE = ("train", "validation", "test")


def check_no_overlap(splits: dict[str, Split]) -> None:
    """Refuse a split that shares a text with an earlier one (train, then validation), after
    normalisation. The message names both files and rows and how to drop them instead."""
    for k, name in enumerate(_PRECEDENCE):
        for earlier in _PRECEDENCE[:k]:
            if name not in splits or earlier not in splits:
                continue
            hits = _overlap(splits, name, earlier)
            if hits:
                i, j = hits[0]
                a, b = splits[name], splits[earlier]
                raise DataError(
                    f"{name} split overlaps {earlier} in {len(hits)} text(s); first: {a.texts[i]!r} "
                    f"({a.origin}, row {a.frame['row'].iloc[i]} = {b.origin}, row {b.frame['row'].iloc[j]}). "
                    f"Pass --dedupe (mlflow run: -P dedupe=true) to drop them, keeping the {earlier} copy"
                )


def drop_overlap(splits: dict[str, Split]) -> tuple[dict[str, Split], dict[str, int]]:
    """``--dedupe``: drop from each split the texts an earlier split already holds (train
    keeps its copy). Returns the new splits and how many rows each lost."""
    out, dropped = dict(splits), {}
    for k, name in enumerate(_PRECEDENCE):
        if name not in out:
            continue
        drop: set[int] = set()
        for earlier in _PRECEDENCE[:k]:
            if earlier in out:
                drop.update(i for i, _ in _overlap(out, name, earlier))
        split = out[name]
        keep = [i for i in range(len(split)) if i not in drop]
        if drop and not keep:
            raise DataError(f"{split.origin}: every row of the {name} split also occurs in an earlier split")
        out[name] = Split(name, split.frame.iloc[keep].reset_index(drop=True), split.origin)
        dropped[name] = len(drop)
    return out, dropped


# --------------------------------------------------------------------------- loading
def load_dataset(
    source: str = "news9",
    splits: tuple[str, ...] = SPLITS,
    *,
    text_column: str = "text",
    label_column: str = "label",
    labels: str | list[str] = "",
    dedupe: bool = False,
) -> Dataset:
    """Load and validate ``splits`` of a dataset (see the module docstring for sources).

    ``labels``: ``"a,b,c"`` or the path of a names file (one label a line) fixing the label
    list and its order; empty: a ``labels.txt`` beside the data, else the sorted labels of
    the training split. ``dedupe``: drop texts an earlier split holds instead of refusing.
    """
    cols = _check_options(splits, text_column, label_column)
    wanted = tuple(dict.fromkeys(("train", *splits)))  # train always: the label list needs it
    path, hub_id = _locate(source)
    raw, hub_names = (read_local(path, wanted, cols), None) if path is not None else read_hub(hub_id, wanted, cols)
    names, names_from = _label_names(labels, path, hub_names)
    named = {k: (name_labels(frame, origin, names), origin) for k, (frame, origin) in raw.items()}
    if "all" in named:  # one file: the label list comes from all of it, then it is split
        loaded, label_list = _split_one_file(*named["all"], names, names_from, wanted)
    else:
        loaded, label_list = _check_split_files(named, names, names_from, wanted)
    _check_label_list(loaded["train"], label_list, names, names_from)
    loaded = _with_label_ids(loaded, label_list)
    dropped: dict[str, int] = {}
    if dedupe:
        loaded, dropped = drop_overlap(loaded)
    else:
        check_no_overlap(loaded)
    return Dataset(source, {n: loaded[n] for n in splits}, tuple(label_list), dropped)


def _check_options(splits: tuple[str, ...], text_column: str, label_column: str) -> dict[str, str]:
    """Refuse an unknown split or a blank column name; return the column keyword arguments."""
    unknown = [s for s in splits if s not in SPLITS]
    if unknown:
        raise DataError(f"unknown split(s) {unknown}; splits are {list(SPLITS)}")
    for what, col in (("text", text_column), ("label", label_column)):
        if not isinstance(col, str) or not col.strip():
            raise DataError(f"--{what}-column must name a column, got {col!r}")
    return {"text_column": text_column, "label_column": label_column}


def _locate(source: str) -> tuple[Path | None, str]:
    """``(path, "")`` for news9 or an existing local path, else ``(None, Hugging Face dataset id)``."""
    if source == "news9":
        return NEWS9_DIR, ""
    if source.startswith("hf:"):
        return None, source[3:]
    # a bundled name before the working folder: a folder of that name there (which a store writer
    # can make where a sqlite store lies) must not stand in for it (the twenty-ninth adversarial
    # run); `./support3` names such a folder
    if re.fullmatch(r"[\w-]+", source) and (BUNDLED_DIR / source / "train.csv").is_file():
        return BUNDLED_DIR / source, ""
    if Path(source).expanduser().exists():
        return Path(source).expanduser(), ""
    if source.startswith((".", "/", "~")) or Path(source).suffix.lower() in FORMATS:
        raise DataError(f"{source}: no such file or folder")
    return None, source


@dataclass(frozen=True)
class TaggedData:
    """Data a registry tag named, pinned where the trust check looked: ``dataset`` and ``labels``
    are what the loader must be given (a local path with every link resolved, ``hf:<id>``, a
    names file's resolved path or an inline label list), ``untrusted`` why the user did not vouch
    for it (``None``: they did). The twenty-fifth adversarial run showed the check a link to a
    bundled dataset and repointed it before the loader opened the same name again; loading
    ``dataset``/``labels`` reads what was checked (a trusted folder is one store writers cannot
    write to)."""

    dataset: str
    labels: str | list[str]
    untrusted: str | None


def _pin_source(source: str, trusted: list[str]) -> tuple[str, str | None]:
    """``source`` in the form the loader reads without looking it up again, and why it is not
    one the user vouched for (``None``: a bundled dataset, an entry of ``trusted`` given exactly,
    or a local path inside a folder listed in ``trusted``). Anyone who can write tags can name a
    dataset; only the user can say which data a judgement may rest on."""
    entries = [t for t in (e.strip() for e in trusted) if t]
    path, hub_id = _locate(source) if not source.startswith("hf:") else (None, source[3:])
    if path is None:
        ok = source in entries or f"hf:{hub_id}" in entries or hub_id in entries
        return f"hf:{hub_id}", None if ok else f"{source} is a Hugging Face dataset not listed as trusted"
    resolved = path.resolve()
    if source in entries:
        return str(resolved), None
    if resolved.parent == BUNDLED_DIR.resolve() and (resolved / "train.csv").is_file():
        return str(resolved), None  # a bundled dataset as a whole (not one of its files: a split or a source file)
    roots = [Path(e).expanduser().resolve() for e in entries if not e.startswith("hf:")]
    if any(resolved == r or r in resolved.parents for r in roots):
        return str(resolved), None
    return str(resolved), f"{source} is not a bundled dataset and not inside a trusted folder"


def pin_tagged_data(dataset: str, labels: object, trusted: list[str]) -> TaggedData:
    """A dataset a tag names, and the names file its ``labels`` option gives when the loader
    would read that value as a file (a path with a comma in it included: the twenty-fourth
    adversarial run read the evidence key through ``/tmp/x,y/../..``), each checked and pinned.
    An inline ``a,b,c`` is pinned as the list, so no file of that name made later is read. The
    one check ``evaluate --dataset auto`` and the keyed rebuild's calibration data share."""
    pinned, untrusted = _pin_source(dataset, trusted)
    if isinstance(labels, (list, tuple)) and all(isinstance(x, str) for x in labels):
        return TaggedData(pinned, list(labels), untrusted)  # a list: nothing to read
    if not isinstance(labels, str):
        return TaggedData(pinned, "", untrusted or f"labels {labels!r} are neither a names file nor a,b,c")
    if not labels.strip():
        return TaggedData(pinned, "", untrusted)
    if not labelsets.read_as_file(labels):
        return TaggedData(pinned, [x.strip() for x in labels.strip().split(",")], untrusted)
    names_file, names_untrusted = _pin_source(labels.strip(), trusted)  # a names file is read too
    return TaggedData(pinned, names_file, untrusted or names_untrusted)


def _label_names(
    labels: str | list[str], path: Path | None, hub_names: list[str] | None
) -> tuple[list[str] | None, str]:
    """The given label list and where it came from: ``labels=``, else a ``labels.txt`` beside the
    data, else the Hugging Face ClassLabel names (None: the training split's labels decide)."""
    try:
        explicit, explicit_from = labelsets.parse_labels_option(labels)
    except ValueError as exc:
        raise DataError(str(exc)) from None
    beside, beside_from = names_beside(path)
    if explicit:
        return explicit, explicit_from
    if beside:
        return beside, beside_from
    return hub_names, "the dataset's ClassLabel feature"


def _split_one_file(
    frame: pd.DataFrame, origin: str, names: list[str] | None, names_from: str, wanted: tuple[str, ...]
) -> tuple[dict[str, Split], list[str]]:
    """A single file's ``wanted`` splits (70/10/20, stratified) and the label list from all of it."""
    label_list = list(names) if names else labelsets.labels_from(frame["label"])
    check_labels(frame, origin, label_list, f"from {names_from}")
    parts = stratified_split(frame, labels=label_list)
    empty = [n for n in SPLITS if parts[n].empty]
    if empty:
        raise DataError(
            f"{origin}: {len(frame)} row(s) are too few to split 70/10/20 into train, validation and "
            f"test (the {' and '.join(empty)} part would be empty); give more rows per label, or a "
            "folder with train/validation/test files"
        )
    return {n: Split(n, parts[n], f"{origin} [{n} part]") for n in wanted}, label_list


def _check_split_files(
    named: dict[str, tuple[pd.DataFrame, str]], names: list[str] | None, names_from: str, wanted: tuple[str, ...]
) -> tuple[dict[str, Split], list[str]]:
    """One split per file, every label checked against the label list (given, or the training split's)."""
    train_frame, train_origin = named["train"]
    label_list = list(names) if names else labelsets.labels_from(train_frame["label"])
    where = f"from {names_from}" if names else f"the labels of the training split {train_origin}"
    loaded = {}
    for n in wanted:
        frame, origin = named[n]
        check_labels(frame, origin, label_list, where)
        loaded[n] = Split(n, frame, origin)
    return loaded, label_list


def _check_label_list(train: Split, label_list: list[str], names: list[str] | None, names_from: str) -> None:
    """At least two labels, and every label of a given list has training rows."""
    if len(label_list) < 2:
        raise DataError(f"{train.origin}: a classifier needs at least 2 labels; found {label_list}")
    if names:
        seen = set(train.frame["label"])
        absent = [x for x in label_list if x not in seen]
        if absent:
            raise DataError(
                f"{train.origin}: label(s) {absent} (from {names_from}) "
                "have no training rows; a model cannot learn them"
            )


def _with_label_ids(loaded: dict[str, Split], label_list: list[str]) -> dict[str, Split]:
    """Every split with a ``label_id`` column: the label's index in ``label_list`` (its logit)."""
    index = {name: i for i, name in enumerate(label_list)}
    return {
        n: Split(n, s.frame.assign(label_id=s.frame["label"].map(index).astype(int)), s.origin)
        for n, s in loaded.items()
    }


def evaluated_digest(dataset: Dataset) -> str:
    """:func:`dataset_digest` of the test split alone (and the labels): what an evaluation measured."""
    return dataset_digest(Dataset(dataset.source, {"test": dataset["test"]}, dataset.labels))


def dataset_digest(dataset: Dataset) -> str:
    """SHA-256 over every split's texts and labels: identifies the data a step consumed. Each
    row is one JSON line, so a text holding tabs or newlines cannot pass for a row boundary (the
    twenty-ninth adversarial run made other splits with one digest when rows were joined by tabs)."""
    h = hashlib.sha256()
    h.update((json.dumps(["labels", *dataset.labels]) + "\n").encode("utf-8"))  # the model contract
    for name in sorted(dataset.splits):
        for text, label in zip(dataset[name].texts, dataset[name].frame["label"]):
            h.update((json.dumps([name, str(label), str(text)]) + "\n").encode("utf-8"))
    return h.hexdigest()
