"""The data layer and the bundled news9 dataset."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from quantgate.data import (
    NEWS9_DIR,
    SPLITS,
    DataError,
    duplicate_groups,
    load_dataset,
    near_duplicates,
    news9_labels,
    normalise,
    stratified_split,
)
from quantgate.labels import load_label_map, save_label_map

LABELS = news9_labels()


@pytest.fixture(scope="module")
def news9():
    return load_dataset("news9")


# ----------------------------------------------------------------- the bundled dataset
def test_news9_has_every_split_and_label(news9):
    counts = news9.counts()
    assert list(counts.index) == list(LABELS)
    assert (counts["total"] >= 200).all(), counts
    assert counts["total"].sum() >= 1800
    for split in SPLITS:
        assert (counts[split] > 0).all(), f"{split} misses a label"


def test_news9_split_proportions_are_70_10_20(news9):
    total = sum(len(news9[s]) for s in SPLITS)
    for split, share in zip(SPLITS, (0.7, 0.1, 0.2)):
        assert abs(len(news9[split]) / total - share) < 0.01


def test_news9_has_no_duplicates_within_or_across_splits(news9):
    texts = [t for s in SPLITS for t in news9[s].texts]
    assert duplicate_groups(texts) == []


def test_news9_has_no_near_duplicates(news9):
    texts = [t for s in SPLITS for t in news9[s].texts]
    assert near_duplicates(texts, 0.8) == []


def test_news9_headlines_are_4_to_25_words(news9):
    lengths = [len(t.split()) for s in SPLITS for t in news9[s].texts]
    assert min(lengths) >= 4 and max(lengths) <= 25


def test_news9_sources_have_about_ten_percent_hard_items():
    frames = [pd.read_csv(p, dtype=str) for p in (NEWS9_DIR / "source").glob("*.csv")]
    hard = pd.concat(frames)["hard"].eq("1").mean()
    assert 0.08 <= hard <= 0.15


def test_written_splits_match_the_sources():
    """The committed splits are what build.py derives from the sources (not edited by hand)."""
    result = subprocess.run([sys.executable, str(NEWS9_DIR / "build.py"), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# ----------------------------------------------------------------- splitting and text maths
def test_normalise_ignores_case_punctuation_and_spacing():
    assert normalise("  Bank's  RATE-rise: 'shock'! ") == normalise("banks rate rise shock")


def test_near_duplicates_finds_reworded_copies_only():
    texts = [
        "Central bank raises interest rates to 5 percent",
        "Central bank raises interest rates to 5 percent today",
        "Striker signs four-year deal with Lisbon club",
    ]
    assert [(i, j) for i, j, _ in near_duplicates(texts, 0.8)] == [(0, 1)]


def _frame(n_per_label=10):
    return pd.DataFrame(
        [
            {"text": f"{label} headline number {i} about {label}", "label": label}
            for label in LABELS
            for i in range(n_per_label)
        ]
    )


def test_stratified_split_is_deterministic_and_order_independent():
    frame = _frame()
    a = stratified_split(frame)
    b = stratified_split(frame.sample(frac=1, random_state=3))
    for name in SPLITS:
        pd.testing.assert_frame_equal(a[name], b[name])
    assert [len(a[n]) for n in SPLITS] == [63, 9, 18]
    assert set(a["train"]["text"]).isdisjoint(a["test"]["text"])


# ----------------------------------------------------------------- local files
def _write_split_folder(folder: Path, fmt: str) -> None:
    parts = stratified_split(_frame())
    for name, frame in parts.items():
        if fmt == "csv":
            frame.to_csv(folder / f"{name}.csv", index=False)
        elif fmt == "jsonl":
            frame.to_json(folder / f"{name}.jsonl", orient="records", lines=True)
        else:
            frame.to_parquet(folder / f"{name}.parquet")


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_loads_a_local_folder_in_each_format(tmp_path, fmt):
    _write_split_folder(tmp_path, fmt)
    ds = load_dataset(str(tmp_path))
    assert [len(ds[s]) for s in SPLITS] == [63, 9, 18]
    assert ds["test"].frame["label_id"].between(0, len(LABELS) - 1).all()


def test_a_single_file_is_split_70_10_20(tmp_path):
    _frame().to_csv(tmp_path / "all.csv", index=False)
    ds = load_dataset(str(tmp_path / "all.csv"))
    assert [len(ds[s]) for s in SPLITS] == [63, 9, 18]


# ----------------------------------------------------------------- validation errors
def _folder_with(tmp_path: Path, name: str, content: str, suffix: str = "csv") -> Path:
    _write_split_folder(tmp_path, "csv")
    (tmp_path / f"{name}.csv").unlink()
    (tmp_path / f"{name}.{suffix}").write_text(content, encoding="utf-8")
    return tmp_path


def test_missing_column_names_the_file(tmp_path):
    folder = _folder_with(tmp_path, "train", "headline,label\nSomething happened,World\n")
    with pytest.raises(DataError, match=r"train\.csv: missing column\(s\) \['text'\]"):
        load_dataset(str(folder))


def test_empty_text_names_the_file_and_row(tmp_path):
    folder = _folder_with(tmp_path, "test", "text,label\nA fine headline here,World\n  ,Sports\n")
    with pytest.raises(DataError, match=r"test\.csv, row 2: text is empty"):
        load_dataset(str(folder))


@pytest.mark.parametrize("value,problem", [(42, "text must be a string, got int"), (None, r"text is missing \(null\)")])
def test_non_string_text_names_the_file_and_row(tmp_path, value, problem):
    lines = [
        json.dumps({"text": "A fine headline here", "label": "World"}),
        json.dumps({"text": value, "label": "World"}),
    ]
    folder = _folder_with(tmp_path, "validation", "\n".join(lines) + "\n", suffix="jsonl")
    with pytest.raises(DataError, match=rf"validation\.jsonl, row 2: {problem}"):
        load_dataset(str(folder))


def test_unknown_label_names_the_file_row_and_label(tmp_path):
    folder = _folder_with(tmp_path, "train", "text,label\nA fine headline here,World\nGoal!,Sport\n")
    (folder / "labels.txt").write_text("\n".join(LABELS) + "\n")  # the label list is fixed: Sport is not in it
    with pytest.raises(DataError, match=r"train\.csv, row 2: label 'Sport' is not one of"):
        load_dataset(str(folder))


def test_test_split_overlapping_train_is_refused(tmp_path):
    _write_split_folder(tmp_path, "csv")
    train = pd.read_csv(tmp_path / "train.csv")
    test = pd.read_csv(tmp_path / "test.csv")
    leaked = train.iloc[[5]].assign(text=lambda f: f["text"].str.upper() + "!")  # same after normalising
    pd.concat([test, leaked]).to_csv(tmp_path / "test.csv", index=False)
    with pytest.raises(DataError, match=r"test split overlaps train in 1 text"):
        load_dataset(str(tmp_path))


def test_missing_local_path_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="no such file or folder"):
        load_dataset(str(tmp_path / "nope.csv"))


def test_a_bundled_dataset_loads_by_name():
    """support3 is a folder of data/, like news9: its name is enough, offline."""
    data = load_dataset("support3")
    assert data.labels == ("billing", "bug", "account")
    assert data["train"].origin.endswith("data/support3/train.csv")


def test_missing_split_file_is_a_clear_error(tmp_path):
    _write_split_folder(tmp_path, "csv")
    (tmp_path / "validation.csv").unlink()
    with pytest.raises(DataError, match="no file for split 'validation'"):
        load_dataset(str(tmp_path))


# ----------------------------------------------------------------- the label map
def test_label_map_round_trips_in_contract_order(tmp_path):
    path = save_label_map(tmp_path / "label_map.json", LABELS)
    assert load_label_map(path) == list(LABELS)
    assert LABELS[:4] == ("World", "Sports", "Business", "Sci/Tech")


def test_label_map_with_a_gap_is_refused(tmp_path):
    (tmp_path / "m.json").write_text(json.dumps({"0": "World", "2": "Sports"}))
    with pytest.raises(ValueError, match="without gaps"):
        load_label_map(tmp_path / "m.json")
