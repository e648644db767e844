"""Issue 17, the twenty-sixth adversarial run: with a key, `evaluate --dataset auto` followed a
variant's own `dataset` tag, and trusted any file inside a folder listed in
QUANTGATE_TRUSTED_DATA. The writer named that folder's `train.csv`: the loader split the one file
70/10/20, the variant was judged on texts its parent was trained on (macro F1 1.0), and a version
the gate had rejected on the real test split was promoted and served. Now, with a key, the data
comes from the FP32 parent's tags and must have the digest its training run recorded."""

from __future__ import annotations

import shutil
from contextlib import contextmanager

from mlflow import MlflowClient
from test_adversarial import _one_error_line, _quantgate  # noqa: F401
from test_adversarial_signed import COPY, KEY, signed  # noqa: F401

from quantgate.data import NEWS9_DIR, dataset_digest, load_dataset


def _trusted_copy(tmp_path, monkeypatch):
    """The key holder's own trusted folder, holding news9, as the README advises."""
    trusted = tmp_path / "trusted"
    shutil.copytree(NEWS9_DIR, trusted / "news9")
    monkeypatch.setenv("QUANTGATE_TRUSTED_DATA", str(trusted))
    monkeypatch.setenv("QUANTGATE_EVIDENCE_KEY", KEY)
    return trusted / "news9" / "train.csv"


def _latest_evaluation(version: str):
    client = MlflowClient()
    ids = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(
        ids, filter_string=f"params.model_uri = 'models:/{COPY}/{version}'", order_by=["attributes.start_time DESC"]
    )
    return runs[0]


def test_a_variants_own_dataset_tag_does_not_choose_its_test_data(signed, monkeypatch, tmp_path):  # noqa: F811
    """The run's case 1 as it was done: one tag on the variant, none on the attested parent.
    Before: the keyed evaluation measured the training file's 20 % part. Now it reads the
    parent's data (news9), whatever the variant's tag says."""
    train_file = _trusted_copy(tmp_path, monkeypatch)
    version = signed["int8"]
    with _dataset_tag(version, str(train_file)):
        result = _quantgate("evaluate", "--version", version, "--model-name", COPY, "--latency-runs", "5")
        assert result.exit_code == 0, result.output
        params = _latest_evaluation(version).data.params
        assert params["dataset"] == "news9", params  # the parent's tag, not the variant's
        assert params["dataset_digest"] != dataset_digest(load_dataset(str(train_file), ("train", "test")))


def test_a_parents_dataset_tag_that_names_other_data_is_refused(signed, monkeypatch, tmp_path):  # noqa: F811
    """The same tag on the attested parent (tags are anyone's; the training run's params are
    not): the data it names is not what the training run recorded, so nothing is measured."""
    train_file = _trusted_copy(tmp_path, monkeypatch)
    with _dataset_tag(signed["fp32"], str(train_file)):
        line = _one_error_line(
            _quantgate("evaluate", "--version", signed["int8"], "--model-name", COPY, "--latency-runs", "5")
        )
        assert "is not the data it was attested with" in line, line


@contextmanager
def _dataset_tag(version: str, value: str):
    """Version ``version``'s ``dataset`` tag set to ``value`` (as a store writer would), put back after."""
    client = MlflowClient()
    before = client.get_model_version(COPY, version).tags.get("dataset")
    client.set_model_version_tag(COPY, version, "dataset", value)
    try:
        yield
    finally:
        if before is None:
            client.delete_model_version_tag(COPY, version, "dataset")
        else:
            client.set_model_version_tag(COPY, version, "dataset", before)
