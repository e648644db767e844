"""Any task's data: label lists from the data, columns, integer labels, dedupe, clear errors."""

from __future__ import annotations

import pandas as pd
import pytest

from quantgate.data import SPLITS, DataError, dataset_digest, load_dataset, stratified_split
from quantgate.labels import label_name, labels_from, parse_labels_option

TOPICS = ["sports", "business", "world", "tech"]


def _frame(labels=TOPICS, n=10):
    return pd.DataFrame(
        [
            {"text": f"{label} story number {i} about {label} things", "label": label}
            for label in labels
            for i in range(n)
        ]
    )


def _folder(tmp_path, frame=None, fmt="csv", **rename):
    parts = stratified_split(frame if frame is not None else _frame())
    for name, part in parts.items():
        part = part.rename(columns=rename)
        if fmt == "csv":
            part.to_csv(tmp_path / f"{name}.csv", index=False)
        else:
            part.to_parquet(tmp_path / f"{name}.parquet")
    return tmp_path


def test_labels_come_from_the_training_split_sorted(tmp_path):
    ds = load_dataset(str(_folder(tmp_path)))
    assert ds.labels == ("business", "sports", "tech", "world")
    assert ds.counts().index.tolist() == list(ds.labels)
    for s in SPLITS:
        assert [ds.labels[i] for i in ds[s].label_ids] == ds[s].frame["label"].tolist()


def test_explicit_labels_and_a_labels_file_fix_the_order(tmp_path):
    folder = _folder(tmp_path)
    assert load_dataset(str(folder), labels="world,sports,business,tech").labels == (
        "world",
        "sports",
        "business",
        "tech",
    )
    (folder / "labels.txt").write_text("tech\nworld\n# comment\nsports\nbusiness\n")
    assert load_dataset(str(folder)).labels == ("tech", "world", "sports", "business")
    names = tmp_path / "names.txt"
    names.write_text("sports\nworld\ntech\nbusiness\n")
    assert load_dataset(str(folder), labels=str(names)).labels == ("sports", "world", "tech", "business")


def test_label_order_changes_the_dataset_digest(tmp_path):
    folder = _folder(tmp_path)
    assert dataset_digest(load_dataset(str(folder))) != dataset_digest(
        load_dataset(str(folder), labels="world,sports,business,tech")
    )


def test_custom_columns_and_integer_labels_with_a_names_file_in_parquet(tmp_path):
    frame = _frame()
    frame["label"] = frame["label"].map({name: i for i, name in enumerate(TOPICS)})
    folder = _folder(tmp_path, frame, fmt="parquet", text="body", label="topic")
    (folder / "labels.txt").write_text("\n".join(TOPICS) + "\n")
    ds = load_dataset(str(folder), text_column="body", label_column="topic")
    assert ds.labels == tuple(TOPICS)
    assert set(ds["test"].frame["label"]) == set(TOPICS)
    assert ds["train"].frame["label"].iloc[0] == TOPICS[ds["train"].label_ids[0]]


def test_integer_labels_without_names_are_their_own_names_sorted_numerically(tmp_path):
    frame = _frame(labels=["2", "10", "1"])
    ds = load_dataset(str(_folder(tmp_path, frame)))
    assert ds.labels == ("1", "2", "10")


def test_wrong_column_names_say_which_options_name_them(tmp_path):
    folder = _folder(tmp_path)
    with pytest.raises(DataError, match=r"train\.csv: missing column\(s\) \['body'\].*--text-column"):
        load_dataset(str(folder), text_column="body")


def test_an_integer_label_outside_the_names_is_refused_with_its_row(tmp_path):
    frame = _frame()
    frame["label"] = frame["label"].map({name: i for i, name in enumerate(TOPICS)})
    folder = _folder(tmp_path, frame, fmt="parquet")
    (folder / "labels.txt").write_text("\n".join(TOPICS[:3]) + "\n")
    with pytest.raises(DataError, match=r"train\.parquet, row \d+: label id 3 is outside 0\.\.2"):
        load_dataset(str(folder))


def test_a_test_label_the_training_split_lacks_is_refused(tmp_path):
    folder = _folder(tmp_path)
    test = pd.read_csv(folder / "test.csv")
    test.loc[3, "label"] = "weather"
    test.to_csv(folder / "test.csv", index=False)
    with pytest.raises(
        DataError, match=r"test\.csv, row 4: label 'weather' is not one of the 4 labels .*training split"
    ):
        load_dataset(str(folder))


def test_a_declared_label_without_training_rows_is_refused(tmp_path):
    with pytest.raises(DataError, match=r"label\(s\) \['weather'\] .* have no training rows"):
        load_dataset(str(_folder(tmp_path)), labels="sports,business,world,tech,weather")


def test_one_label_is_not_a_classifier(tmp_path):
    with pytest.raises(DataError, match="at least 2 labels"):
        load_dataset(str(_folder(tmp_path, _frame(labels=["only"]))))


def test_a_one_row_file_is_too_small_to_split(tmp_path):
    (tmp_path / "one.csv").write_text("text,label\nJust one ticket here,billing\n")
    with pytest.raises(DataError, match=r"one\.csv: 1 row\(s\) are too few to split"):
        load_dataset(str(tmp_path / "one.csv"))


def test_a_bad_names_file_is_refused(tmp_path):
    folder = _folder(tmp_path)
    (folder / "labels.txt").write_text("sports\nsports\nworld\n")
    with pytest.raises(DataError, match=r"labels\.txt: duplicate label\(s\) \['sports'\]"):
        load_dataset(str(folder))
    with pytest.raises(DataError, match="no such names file"):
        load_dataset(str(folder), labels=str(tmp_path / "missing.txt"))


def test_a_corrupt_parquet_file_is_one_data_error(tmp_path):
    folder = _folder(tmp_path, fmt="parquet")
    (folder / "validation.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match=r"validation\.parquet: cannot be read as parquet"):
        load_dataset(str(folder))


def _leak(folder, n=3):
    train = pd.read_csv(folder / "train.csv")
    test = pd.read_csv(folder / "test.csv")
    pd.concat([test, train.iloc[:n]]).to_csv(folder / "test.csv", index=False)
    return len(test)


def test_cross_split_duplicates_are_refused_with_a_hint_or_dropped_with_dedupe(tmp_path):
    folder = _folder(tmp_path)
    n_test = _leak(folder)
    with pytest.raises(DataError, match=r"test split overlaps train in 3 text\(s\).*row \d+.*--dedupe"):
        load_dataset(str(folder))
    ds = load_dataset(str(folder), dedupe=True)
    assert ds.dropped == {"train": 0, "validation": 0, "test": 3}
    assert len(ds["test"]) == n_test
    assert set(map(str.lower, ds["test"].texts)).isdisjoint(map(str.lower, ds["train"].texts))


def test_validation_and_test_sharing_a_text_is_refused(tmp_path):
    folder = _folder(tmp_path)
    val = pd.read_csv(folder / "validation.csv")
    test = pd.read_csv(folder / "test.csv")
    pd.concat([test, val.iloc[:1]]).to_csv(folder / "test.csv", index=False)
    with pytest.raises(DataError, match="test split overlaps validation in 1 text"):
        load_dataset(str(folder))
    assert load_dataset(str(folder), dedupe=True).dropped["test"] == 1


@pytest.mark.parametrize(
    "value,names,expected",
    [
        ("sports", None, "sports"),
        (3, None, "3"),
        (1, ["a", "b"], "b"),
        ("1", ["a", "b"], "b"),
        (1.0, ["a", "b"], "b"),
        ("b", ["a", "b"], "b"),
    ],
)
def test_label_name(value, names, expected):
    assert label_name(value, names) == expected


@pytest.mark.parametrize(
    "value,names,problem",
    [
        (None, None, "missing"),
        ("", None, "non-empty"),
        (2, ["a", "b"], "outside 0..1"),
        ("c", ["a", "b"], "not one of"),
    ],
)
def test_label_name_refuses(value, names, problem):
    with pytest.raises(ValueError, match=problem):
        label_name(value, names)


def test_labels_option_parsing(tmp_path):
    assert parse_labels_option("") == (None, "")
    assert parse_labels_option(" a, b ,c")[0] == ["a", "b", "c"]
    with pytest.raises(ValueError, match="duplicate"):
        parse_labels_option("a,a")
    assert labels_from(["b", "a", "b"]) == ["a", "b"]
