"""Logging one file into a run's artifacts without touching anything by a name a writer can swap.

MLflow writes a file into a local artifact store under a temporary name, then sets its mode by
that *name* (``shutil.copystat``, or ``os.chmod``) and renames it into place. A store writer who
swaps the temporary name for a link in between has the mode set on whatever the link points at:
the forty-seventh adversarial run made the key holder's evidence key file 0644 this way, through
``compare``'s plot and the gate's ``decision.json``, and another user read it.

Into a local store quantgate therefore writes itself: the run's artifact folder is opened, and
each folder below it opened (or made) without following links; the file is created there with
``O_EXCL | O_NOFOLLOW`` under a random name, written and given its mode through its descriptor
(``fchmod``), and renamed into place relative to the folder's descriptor. Swapping the temporary
name then moves at most a link into the store; nothing outside it is written or changed. The same holds
for a folder (``log_folder``) and for the copy of a saved model ``log_model`` makes into its
logged model's folder (``log_model_folder``). Other stores (S3, a tracking server's proxied
artifacts) are MLflow's to write.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
from pathlib import Path, PurePosixPath

from mlflow import MlflowClient

from quantgate.artifact_download import LinkInStoreError, local_folder
from quantgate.private_folders import open_path, write_problem

MODE = 0o644


def log_file(run_id: str, local_file: str | Path, artifact_path: str | None = None) -> None:
    """``MlflowClient().log_artifact(run_id, local_file, artifact_path)``, written as above."""
    client = MlflowClient()
    root = _local_root(client.get_run(run_id).info.artifact_uri)
    if root is None:
        client.log_artifact(run_id, str(local_file), artifact_path)
        return
    folder = _open_folder(root, run_id, artifact_path, f"run {run_id}'s artifacts")
    try:
        _write_into(folder, Path(local_file))
    finally:
        os.close(folder)


def log_folder(run_id: str, local_dir: str | Path, artifact_path: str | None = None) -> None:
    """``MlflowClient().log_artifacts(run_id, local_dir, artifact_path)``, written as above."""
    client = MlflowClient()
    root = _local_root(client.get_run(run_id).info.artifact_uri)
    if root is None:
        client.log_artifacts(run_id, str(local_dir), artifact_path)
        return
    _write_tree(root, run_id, Path(local_dir), artifact_path, f"run {run_id}'s artifacts")


def log_model_folder(model_id: str, local_dir: str | Path) -> None:
    """``MlflowClient().log_model_artifacts(model_id, local_dir)``, written as above: the copy
    ``log_model`` makes of a saved model (MLflow's is ``shutil.copy2`` file by file, which writes
    through a link a writer put at a file's name and then sets the mode by that name)."""
    client = MlflowClient()
    root = _local_root(client.get_logged_model(model_id).artifact_location)
    if root is None:
        client.log_model_artifacts(model_id, str(local_dir))
        return
    _write_tree(root, model_id, Path(local_dir), None, f"logged model {model_id}'s artifacts")


def log_dict(run_id: str, data: dict, artifact_file: str) -> None:
    """``MlflowClient().log_dict`` for a ``.json`` artifact, logged by :func:`log_file`."""
    log_text(run_id, json.dumps(data, indent=2), artifact_file)


def log_text(run_id: str, text: str, artifact_file: str) -> None:
    """``MlflowClient().log_text``, logged by :func:`log_file`."""
    path = PurePosixPath(artifact_file)
    with tempfile.TemporaryDirectory(prefix="quantgate-log-") as tmp:
        local = Path(tmp) / path.name
        local.write_text(text, encoding="utf-8")
        parent = str(path.parent)
        log_file(run_id, local, None if parent in ("", ".") else parent)


def _local_root(artifact_uri: str) -> str | None:
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    return local_folder(get_artifact_repository(artifact_uri))


def _open_folder(root: str, owner: str, artifact_path: str | None, shown: str) -> int:
    """The descriptor of ``root/artifact_path``. ``root`` is where the store keeps one run's or
    logged model's artifacts, ``…/<owner id>/artifacts`` (anything else is refused: the location
    is a row any store writer can rewrite, and pointed elsewhere it would have quantgate write its
    files' names into a folder of the key holder's). The folder above those two is made where
    missing and opened as named (where the store lives is the store's to say); those two and each
    folder below them are opened, or made, without following a link."""
    base, own, artifacts = _split_root(root)
    if (own, artifacts) != (owner, "artifacts"):
        raise LinkInStoreError(
            f"{shown} are stored at {root!r}, which is not a folder the store makes for them; nothing was logged"
        )
    _refuse_private(os.path.realpath(base), root, shown)  # before making anything there
    os.makedirs(base, exist_ok=True)
    folder = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
    try:
        _refuse_private(open_path(folder), root, shown)
        below = [p for p in PurePosixPath(artifact_path or "").parts if p not in ("", ".")]
        for name in [own, artifacts, *below]:
            inner = _inner_folder(folder, name, artifact_path, shown)
            os.close(folder)
            folder = inner
        _refuse_private(open_path(folder), root, shown)
    except BaseException:
        os.close(folder)
        raise
    return folder


def _refuse_private(real: str, root: str, shown: str) -> None:
    problem = write_problem(real)
    if problem:
        raise LinkInStoreError(f"{shown} are stored at {root!r}, and {problem}; nothing was logged")


def _split_root(root: str) -> tuple[str, str, str]:
    """``(base, id, "artifacts")`` of ``base/<id>/artifacts``."""
    path = os.path.normpath(root)
    upper, artifacts = os.path.split(path)
    base, own = os.path.split(upper)
    return base, own, artifacts


def _inner_folder(folder: int, name: str, artifact_path: str | None, shown: str) -> int:
    if name == "..":
        raise LinkInStoreError(f"artifact path {artifact_path!r} climbs out of {shown}")
    try:
        os.mkdir(name, 0o755, dir_fd=folder)
    except FileExistsError:
        pass
    try:
        return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=folder)
    except OSError:
        raise LinkInStoreError(f"the folder {name!r} of {shown} is not a plain folder; nothing was logged") from None


def _write_tree(root: str, owner: str, local_dir: Path, artifact_path: str | None, shown: str) -> None:
    """Every file below ``local_dir`` (a folder this process wrote) into ``root/artifact_path``."""
    for here, dirs, files in os.walk(local_dir):
        relative = Path(here).relative_to(local_dir).as_posix()
        inside = "/".join(p for p in (artifact_path or "", relative) if p not in ("", "."))
        folder = _open_folder(root, owner, inside, shown)
        try:
            for name in sorted(files):
                _write_into(folder, Path(here) / name)
        finally:
            os.close(folder)
        dirs.sort()


def _write_into(folder: int, local_file: Path) -> None:
    temporary = f".quantgate-upload.{secrets.token_hex(8)}"
    out = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=folder)
    try:
        with open(local_file, "rb") as src, os.fdopen(out, "wb", closefd=False) as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
        os.fchmod(out, MODE)
    finally:
        os.close(out)
    os.rename(temporary, local_file.name, src_dir_fd=folder, dst_dir_fd=folder)
