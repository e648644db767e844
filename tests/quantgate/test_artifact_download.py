"""quantgate.artifact_download: copies out of a local store that never follow a link."""

from __future__ import annotations

import os

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


@pytest.mark.parametrize("kind", ["file link", "folder link", "fifo", "hard link"])
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
