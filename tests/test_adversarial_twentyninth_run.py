"""Issue 17, the twenty-ninth adversarial run:
1. a folder named `support3` in the working folder (beside a sqlite store, so every store writer
   can make one) stood in for the bundled dataset a key holder named with `--dataset support3`,
   holding only texts the variant got right: a rejected variant was promoted and served;
2. the writer rewrote the training run's `dataset_digest` param in the sqlite file and broke the
   parent's attestation; its owner attested it again, as the error advised, and `attest` signed
   the rewritten digest (a training file's), so `--dataset auto` judged a rejected variant on
   training texts;
3. `dataset_digest` joined rows with tabs and newlines, so a text holding them made other splits
   with the same digest.
Done as the run did it: files in the working folder, the sqlite file, MLflow's API, then the key
holder's `quantgate` commands."""

from __future__ import annotations

import csv
import shutil

from mlflow import MlflowClient
from test_adversarial import _one_error_line, _quantgate  # noqa: F401
from test_adversarial_signed import COPY, KEY, signed  # noqa: F401
from test_adversarial_twentyeighth_run import _param_rewritten_in_sqlite, _split_digest, _trusted_train_file

from quantgate.data import BUNDLED_DIR, dataset_digest, load_dataset


def _write(folder, splits: dict[str, list[dict]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in splits.items():
        with open(folder / f"{name}.csv", "w", newline="", encoding="utf-8") as fh:
            out = csv.writer(fh)
            out.writerow(["text", "label"])
            out.writerows([r["text"], r["label"]] for r in rows)
    shutil.copy(BUNDLED_DIR / "support3" / "labels.txt", folder / "labels.txt")


def _rows(split: str) -> list[dict]:
    with open(BUNDLED_DIR / "support3" / f"{split}.csv", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_a_folder_in_the_working_folder_does_not_stand_in_for_a_bundled_dataset(tmp_path, monkeypatch):
    """Case 1: the writer's `./support3` holds a test split of its own choosing. Before: loaded
    instead of the bundled support3. Now the name means the bundled data; `./support3` the folder."""
    test = _rows("test")
    _write(tmp_path / "support3", {"train": _rows("train"), "validation": _rows("validation"), "test": test[:5]})
    monkeypatch.chdir(tmp_path)
    bundled = load_dataset("support3")
    assert len(bundled["test"]) == len(test), bundled["test"].origin
    assert str(BUNDLED_DIR) in bundled["test"].origin
    assert len(load_dataset("./support3")["test"]) == 5  # the folder, when that is what is meant


def _collision_folders(tmp_path):
    train, validation, test = _rows("train"), _rows("validation"), _rows("test")
    moved = train[0]
    swallowed = {"text": f"{test[-1]['text']}\ntrain\t{moved['label']}\t{moved['text']}", "label": test[-1]["label"]}
    _write(tmp_path / "a", {"train": train[1:], "validation": validation, "test": [*test[:-1], swallowed]})
    _write(tmp_path / "b", {"train": train, "validation": validation, "test": test})
    return load_dataset(str(tmp_path / "a")), load_dataset(str(tmp_path / "b"))


def test_two_datasets_with_other_splits_have_other_digests(tmp_path):
    """Case 3, as the run built it: dataset a's last test text holds b's first training row.
    Before: one digest for both. Now two."""
    a, b = _collision_folders(tmp_path)
    assert a["test"].texts != b["test"].texts
    assert dataset_digest(a) != dataset_digest(b)


def test_attesting_again_does_not_sign_a_rewritten_training_digest(signed, monkeypatch, tmp_path):  # noqa: F811
    """Case 2: the training run's `dataset_digest` rewritten in sqlite to a trusted train.csv's
    digest, the parent's attestation broken by a tag, the owner attests again, then the parent's
    `dataset` tag names the train.csv. Before: the re-attest signed the writer's digest and
    `--dataset auto` measured training texts (exit 0). Now the re-attest signs no training data
    (the run's digest is not that of the data its tags name) and `--dataset auto` is refused."""
    train_file = _trusted_train_file(tmp_path, monkeypatch)
    client = MlflowClient()
    fp32 = client.get_model_version(COPY, signed["fp32"])
    before = dict(fp32.tags)
    chosen = _split_digest(train_file)
    try:
        with _param_rewritten_in_sqlite(fp32.run_id, "dataset_digest", chosen):
            client.set_model_version_tag(COPY, fp32.version, "fp32_dataset_digest", chosen)  # attestation broken
            monkeypatch.setenv("QUANTGATE_EVIDENCE_KEY", KEY)
            again = _quantgate("attest", "--version", signed["fp32"], "--model-name", COPY)
            assert again.exit_code == 0, again.output
            assert "attested with no training data" in again.output, again.output
            assert client.get_model_version(COPY, fp32.version).tags["fp32_dataset_digest"] == "none"

            client.set_model_version_tag(COPY, fp32.version, "dataset", str(train_file))
            line = _one_error_line(
                _quantgate("evaluate", "--version", signed["int8"], "--model-name", COPY, "--latency-runs", "5")
            )
            assert "was attested without a dataset_digest" in line, line
    finally:
        for tag, value in before.items():  # the fixture's attested parent, as it was
            client.set_model_version_tag(COPY, fp32.version, tag, value)


def test_attest_signs_the_runs_digest_when_the_data_its_tags_name_has_it(signed, monkeypatch):  # noqa: F811
    """The honest path: the run's digest is that of the data the tags name, so it is signed and
    shown with the data's name."""
    client = MlflowClient()
    fp32 = client.get_model_version(COPY, signed["fp32"])
    assert fp32.tags["fp32_dataset_digest"] == client.get_run(fp32.run_id).data.params["dataset_digest"]
    monkeypatch.setenv("QUANTGATE_EVIDENCE_KEY", KEY)
    shown = _quantgate("attest", "--version", signed["fp32"], "--model-name", COPY)
    assert shown.exit_code == 0 and "already attested" in shown.output, shown.output
