"""quantgate.artifact_log: files logged into a local store without any by-name step a writer can swap."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from pathlib import Path
from urllib.parse import unquote, urlparse

import mlflow
import pytest

from quantgate.artifact_download import LinkInStoreError
from quantgate.artifact_log import log_dict, log_file, log_folder, log_model_folder, log_text


def _artifacts(run) -> Path:
    uri = run.info.artifact_uri
    return Path(unquote(urlparse(uri).path)) if uri.startswith("file:") else Path(uri)


def test_a_file_and_a_dict_land_where_mlflow_would_put_them(store, tmp_path):
    (tmp_path / "plot.png").write_bytes(b"png")
    with mlflow.start_run() as run:
        log_file(run.info.run_id, tmp_path / "plot.png")
        log_file(run.info.run_id, tmp_path / "plot.png", "quantgate/figures")
        log_dict(run.info.run_id, {"a": 1}, "quantgate/evaluation.json")
    root = _artifacts(run)
    assert (root / "plot.png").read_bytes() == b"png" == (root / "quantgate" / "figures" / "plot.png").read_bytes()
    assert stat.S_IMODE((root / "plot.png").stat().st_mode) == 0o644
    assert json.loads(mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/quantgate/evaluation.json")) == {"a": 1}
    assert not [p for p in root.rglob(".quantgate-upload.*")]


def test_a_link_at_the_name_is_replaced_and_what_it_points_at_is_untouched(store, tmp_path):
    # the forty-seventh adversarial run: MLflow set the mode by name, through a swapped-in link,
    # on the evidence key file (0400 -> 0644)
    key = tmp_path / "evidence.key"
    key.write_text("k" * 64)
    key.chmod(0o400)
    (tmp_path / "decision.json").write_text("{}")
    with mlflow.start_run() as run:
        root = _artifacts(run)
        root.mkdir(parents=True, exist_ok=True)
        (root / "decision.json").symlink_to(key)
        log_file(run.info.run_id, tmp_path / "decision.json")
    assert not (root / "decision.json").is_symlink() and (root / "decision.json").read_text() == "{}"
    assert key.read_text() == "k" * 64 and stat.S_IMODE(key.stat().st_mode) == 0o400


@pytest.mark.parametrize("where", ["a folder below the run's", "the run's own folder"])
def test_a_link_in_place_of_a_folder_is_refused_and_nothing_is_written_through_it(store, tmp_path, where):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "t.json").write_text("{}")
    with mlflow.start_run() as run:
        root = _artifacts(run)
        if where == "the run's own folder":  # mlruns/<exp>/<run id> -> elsewhere
            root.parent.parent.mkdir(parents=True, exist_ok=True)
            root.parent.symlink_to(elsewhere, target_is_directory=True)
        else:
            root.mkdir(parents=True, exist_ok=True)
            (root / "quantgate").symlink_to(elsewhere)
        with pytest.raises(LinkInStoreError, match="is not a plain folder"):
            log_file(run.info.run_id, tmp_path / "t.json", "quantgate")
    assert os.listdir(elsewhere) == []


def _planted(root: Path, key: Path, elsewhere: Path) -> None:
    """What a writer who sees a new folder's name plants in it: a link to the key at a file name
    quantgate will write, and a link to another folder at a folder name."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "MLmodel").symlink_to(key)
    (root / "artifacts").symlink_to(elsewhere, target_is_directory=True)


def _key(tmp_path: Path) -> Path:
    key = tmp_path / "evidence.key"
    key.write_text("k" * 64)
    key.chmod(0o400)
    return key


def _saved_model(tmp_path: Path) -> Path:
    local = tmp_path / "saved"
    (local / "artifacts").mkdir(parents=True)
    (local / "MLmodel").write_text("flavors: {}\n")
    (local / "artifacts" / "label_map.json").write_text('["a", "b"]')
    return local


def test_a_saved_model_is_copied_into_its_logged_models_folder_and_through_no_link(store, tmp_path):
    key, elsewhere = _key(tmp_path), tmp_path / "elsewhere"
    elsewhere.mkdir()
    local = _saved_model(tmp_path)
    with mlflow.start_run():
        model = mlflow.initialize_logged_model(name="fp32")
    root = Path(unquote(urlparse(model.artifact_location).path))
    _planted(root, key, elsewhere)
    with pytest.raises(LinkInStoreError, match="the folder 'artifacts' of logged model .* is not a plain folder"):
        log_model_folder(model.model_id, local)
    assert key.read_text() == "k" * 64 and stat.S_IMODE(key.stat().st_mode) == 0o400
    assert os.listdir(elsewhere) == []
    assert (root / "MLmodel").read_text() == "flavors: {}\n"  # the link itself was replaced

    (root / "artifacts").unlink()
    log_model_folder(model.model_id, local)
    assert (root / "artifacts" / "label_map.json").read_text() == '["a", "b"]'
    assert stat.S_IMODE((root / "artifacts" / "label_map.json").stat().st_mode) == 0o644


def test_a_folder_and_a_text_land_where_mlflow_would_put_them(store, tmp_path):
    local = _saved_model(tmp_path)
    with mlflow.start_run() as run:
        log_folder(run.info.run_id, local, "lora_adapter")
        log_text(run.info.run_id, "label,train\na,3\n", "label_counts.csv")
    root = _artifacts(run)
    assert (root / "lora_adapter" / "artifacts" / "label_map.json").read_text() == '["a", "b"]'
    assert mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/label_counts.csv") == "label,train\na,3\n"
    assert sorted(a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)) == [
        "label_counts.csv",
        "lora_adapter",
    ]


def test_a_run_whose_artifact_location_a_writer_rewrote_gets_nothing_logged(store, tmp_path):
    # the location is a row any store writer can set: pointed at a folder of the key holder's,
    # quantgate would write its files' names there
    holders = tmp_path / "holders"
    holders.mkdir()
    (holders / "decision.json").write_text("the key holder's own")
    (tmp_path / "decision.json").write_text("{}")
    with mlflow.start_run() as run:
        pass
    database = str(store / "mlflow.db")
    with sqlite3.connect(database) as db:
        db.execute("UPDATE runs SET artifact_uri = ? WHERE run_uuid = ?", (str(holders), run.info.run_id))
    with pytest.raises(LinkInStoreError, match="not a folder the store makes for them"):
        log_file(run.info.run_id, tmp_path / "decision.json")
    assert (holders / "decision.json").read_text() == "the key holder's own"
