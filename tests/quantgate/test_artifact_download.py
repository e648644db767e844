"""quantgate.artifact_download: copies out of a local store that never follow a link."""

from __future__ import annotations

import os
import socket

import mlflow
import pytest
from mlflow.exceptions import MlflowException

from quantgate.artifact_download import LinkInStoreError, copy_without_links, download_artifacts


def _tree(root):
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("a")
    (root / "sub" / "b.txt").write_text("b")
    return root


def test_a_plain_folder_is_copied_whole(tmp_path):
    src = _tree(tmp_path / "store")
    out = copy_without_links(src, "", tmp_path / "dst")
    assert (out / "a.txt").read_text() == "a" and (out / "sub" / "b.txt").read_text() == "b"
    assert copy_without_links(src, "sub/b.txt", tmp_path / "one") == tmp_path / "one" / "sub" / "b.txt"


@pytest.mark.parametrize("kind", ["file link", "folder link", "fifo", "hard link", "socket"])
def test_anything_but_plain_files_and_folders_is_refused_and_nothing_of_it_read(tmp_path, kind):
    src = _tree(tmp_path / "store")
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "key").write_text("the key")
    if kind == "file link":
        (src / "sub" / "c.txt").symlink_to(secret / "key")
    elif kind == "folder link":
        (src / "sub" / "c").symlink_to(secret)
    elif kind == "fifo":
        os.mkfifo(src / "sub" / "c.txt")  # opening it for reading would block a plain copy forever
    elif kind == "socket":  # opening it fails with ENXIO (the forty-ninth adversarial run)
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(str(src / "sub" / "c.txt"))
        listener.close()
    else:
        os.link(secret / "key", src / "sub" / "c.txt")
    with pytest.raises(LinkInStoreError, match=r"^sub/c(\.txt)? in the artifact store is"):
        copy_without_links(src, "", tmp_path / "dst")
    assert not [p for p in (tmp_path / "dst").rglob("*") if p.is_file() and p.read_text() == "the key"]


def test_a_path_climbing_out_is_refused(tmp_path):
    src = _tree(tmp_path / "store")
    with pytest.raises(LinkInStoreError, match="climbs out"):
        copy_without_links(src / "sub", "../a.txt", tmp_path / "dst")


def test_run_artifacts_download_as_mlflow_does_and_a_missing_one_is_mlflows_error(store, tmp_path):
    (tmp_path / "t.json").write_text("{}")
    with mlflow.start_run() as run:
        mlflow.log_artifact(str(tmp_path / "t.json"))
    (tmp_path / "dst").mkdir()
    path = download_artifacts(run_id=run.info.run_id, artifact_path="t.json", dst_path=tmp_path / "dst")
    assert open(path).read() == "{}"
    with pytest.raises(MlflowException, match="No such artifact"):
        download_artifacts(run_id=run.info.run_id, artifact_path="missing.json", dst_path=tmp_path / "dst")


def test_a_version_whose_files_live_at_a_runs_uri_is_copied_without_links_too(store, tmp_path):
    # the forty-seventh adversarial run: MLflow resolved a runs:/ source, and quantgate handed it
    # the copy, which followed a link swapped in after MLflow's check
    folder = _tree(tmp_path / "m")
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(folder), "m")
    client = mlflow.MlflowClient()
    client.create_registered_model("adv47-runs-uri")
    version = client.create_model_version("adv47-runs-uri", f"runs:/{run.info.run_id}/m", run.info.run_id).version
    stored = tmp_path / "stored"
    root = mlflow.get_run(run.info.run_id).info.artifact_uri.removeprefix("file://")
    os.symlink(os.path.join(root, "m", "a.txt"), os.path.join(root, "m", "sub", "c.txt"))  # inside: MLflow follows it
    with pytest.raises(LinkInStoreError, match="sub/c.txt in the artifact store is a symbolic link"):
        download_artifacts(artifact_uri=f"models:/adv47-runs-uri/{version}", dst_path=stored)
