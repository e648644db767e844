"""Issue 17, the forty-fourth adversarial run (on b113bde): MLflow 3.17 copies ``uv.lock``,
``pyproject.toml`` and ``.python-version`` from the working folder into every model it logs,
following links. With the default store the working folder is the store's: a ``uv.lock`` link
to the key file there put the key into the model the key holder's ``quantise`` logged, a keyed
evaluate signed that model, and the key went to whoever could read the store's artifacts (the
run then signed a label-rotated build with it, and the key holder's gate staged it). quantgate
now logs with MLflow's uv detection off, and with a key a model holding files quantgate never
logs is not loaded."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow
from test_adversarial import _stored_root

from quantgate.labels import load_label_map
from quantgate.model_files import untrusted_code
from quantgate.packaging import log_variant

from conftest import TEST_MODEL

SECRET = "the evidence key would be here\n"


def _int8_copy(pipeline, tmp_path: Path) -> Path:
    return Path(
        mlflow.artifacts.download_artifacts(f"models:/{TEST_MODEL}/{pipeline['int8'].version}", dst_path=str(tmp_path))
    )


def test_a_uv_lock_link_in_the_working_folder_is_not_logged_into_a_model(pipeline, tmp_path, monkeypatch):
    src = _int8_copy(pipeline, tmp_path / "src")
    secret = tmp_path / "keyholder" / "evidence.key"
    secret.parent.mkdir()
    secret.write_text(SECRET)
    store_folder = tmp_path / "store-folder"
    store_folder.mkdir()
    (store_folder / "uv.lock").symlink_to(secret)
    (store_folder / "pyproject.toml").write_text('[project]\nname = "x"\nversion = "0"\n')
    (store_folder / ".python-version").write_text("3.11\n")
    monkeypatch.chdir(store_folder)
    meta = json.loads((src / "artifacts" / "meta.json").read_text())
    with mlflow.start_run(run_name="adv44-uv"):
        mv = log_variant(
            model_path=next((src / "artifacts").glob("*.onnx")),
            tokenizer_dir=src / "artifacts" / "tokenizer",
            runtime="onnxruntime",
            variant="onnx-int8-dynamic",
            precision="int8",
            registered_model_name="adv44-uv",
            labels=load_label_map(src / "artifacts" / "label_map.json"),
            parent_version=pipeline["fp32"].version,
            max_length=meta["max_length"],
        )
    stored = sorted(p.name for p in _stored_root("adv44-uv", mv.version).iterdir())
    assert not {"uv.lock", "pyproject.toml", ".python-version"} & set(stored), stored
    assert not [
        p
        for p in _stored_root("adv44-uv", mv.version).rglob("*")
        if p.is_file() and SECRET in p.read_text(errors="ignore")
    ]


def test_with_a_key_a_model_holding_files_quantgate_never_logs_is_not_loaded(pipeline, tmp_path):
    local = _int8_copy(pipeline, tmp_path / "copy")
    assert untrusted_code(local) is None  # quantgate's own build loads
    shutil.copy(local / "requirements.txt", local / "uv.lock")
    assert "holds files quantgate never logs: uv.lock" in (untrusted_code(local) or ""), untrusted_code(local)
