"""Copies of artifacts that never follow a link: quantgate's one way to download from a store.

MLflow's local artifact repository checks that a path stays inside the store (resolving links)
and then copies it with ``shutil.copy2``, which follows whatever link is there by then. A store
writer who flips a model file between a plain file and a link to a secret wins that race now
and then: the forty-fifth adversarial run had the key holder's ``evaluate`` copy the evidence
key file into its private copy of a model as ``requirements.txt``, and an error quoting that
file's first line showed 60 of the key's 64 characters.

From a local store (a folder, ``file://``) quantgate therefore copies itself: every folder and
file below the artifact's root is opened with ``O_NOFOLLOW`` relative to its parent's open
descriptor, checked (``fstat``) to be a folder or a plain file with one name, and read from
that descriptor. A link, a FIFO, a device or a hard-linked file anywhere is one line
(``LinkInStoreError``) naming the path, and nothing of it is read. The root itself is opened
as the store names it: where the store lives is the store's to say. Other stores (S3, a tracking
server's proxied artifacts) hold no links quantgate's user would follow; MLflow copies those.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path, PurePosixPath

import mlflow

from quantgate.errors import UserError
from quantgate.private_folders import open_path, read_problem

CHUNK = 1 << 20


class LinkInStoreError(UserError):
    """An artifact is not a plain file or folder (a link, a FIFO, a hard-linked file)."""


def download_artifacts(
    *, artifact_uri: str | None = None, run_id: str | None = None, artifact_path: str = "", dst_path: str | Path
) -> str:
    """``mlflow.artifacts.download_artifacts`` into the folder ``dst_path`` (made if missing), copying no
    link from a local store. Returns the local path of the artifact (the folder for a model)."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
    from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository

    if run_id is not None:
        root_uri, path = mlflow.get_run(run_id).info.artifact_uri, artifact_path or ""
    elif artifact_uri is not None and ModelsArtifactRepository.is_models_uri(artifact_uri):
        root_uri, path = ModelsArtifactRepository.split_models_uri(artifact_uri)
    else:
        raise ValueError("download_artifacts needs a models:/ URI or a run_id")
    Path(dst_path).mkdir(parents=True, exist_ok=True)  # as mlflow.artifacts.download_artifacts does
    repo = get_artifact_repository(root_uri)
    folder = local_folder(repo)
    if folder is None:
        return repo.download_artifacts(path, str(dst_path))
    return str(copy_without_links(folder, path, Path(dst_path)))


def local_folder(repo) -> str | None:
    """The folder of a local artifact store behind MLflow's repository ``repo`` (``None``: not
    local), through ``models:/`` and ``runs:/`` (a version's files may live at a ``runs:/`` URI:
    the forty-seventh adversarial run)."""
    from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository
    from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository
    from mlflow.store.artifact.runs_artifact_repo import RunsArtifactRepository

    while isinstance(repo, (ModelsArtifactRepository, RunsArtifactRepository)):
        repo = repo.repo
    return repo.artifact_dir if isinstance(repo, LocalArtifactRepository) else None


def copy_without_links(root: str | Path, path: str, dst: Path) -> Path:
    """Copy ``root/path`` (a file or a folder) to ``dst/path`` opening every entry below ``root``
    with ``O_NOFOLLOW``; ``LinkInStoreError`` on anything but plain folders and files."""
    parts = [p for p in PurePosixPath(path).parts if p not in ("", ".")]
    if ".." in parts:
        raise LinkInStoreError(f"artifact path {path!r} climbs out of its store")
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:  # the store's row names a file, or nothing: a row any writer can set
        raise LinkInStoreError(f"the store's folder {str(root)!r} cannot be opened: {exc.strerror}") from None
    try:
        for i, name in enumerate(parts):
            child = _open_entry(fd, name, "/".join(parts[: i + 1]))
            os.close(fd)
            fd = child
        problem = read_problem(open_path(fd))
        if problem:
            raise LinkInStoreError(f"artifact {path or '.'!r} of the store at {str(root)!r} is not read: {problem}")
        target = dst.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        _copy_entry(fd, target, "/".join(parts) or ".")
        return target
    finally:
        os.close(fd)


def _open_entry(dir_fd: int, name: str, shown: str) -> int:
    """Open ``name`` in the folder ``dir_fd`` without following a link; the descriptor of a plain
    folder or of a plain file with one name, else ``LinkInStoreError``."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST

    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except FileNotFoundError:  # as MLflow reports it, so callers tell "missing" from "refused"
        raise MlflowException(f"No such artifact: {shown!r}", error_code=RESOURCE_DOES_NOT_EXIST) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # O_NOFOLLOW met a link
            raise LinkInStoreError(
                f"{shown} in the artifact store is a symbolic link; quantgate copies no links out of a store"
            ) from None
        # a UNIX socket (ENXIO: the forty-ninth adversarial run), a device without its driver, ...
        why = errno.errorcode.get(exc.errno, exc.errno)
        raise LinkInStoreError(f"{shown} in the artifact store is not a plain file or folder ({why})") from None
    info = os.fstat(fd)
    if stat.S_ISDIR(info.st_mode) or (stat.S_ISREG(info.st_mode) and info.st_nlink == 1):
        return fd
    os.close(fd)
    what = "a file with several names (a hard link)" if stat.S_ISREG(info.st_mode) else "not a plain file or folder"
    raise LinkInStoreError(f"{shown} in the artifact store is {what}; quantgate copies only plain files")


def _copy_entry(fd: int, target: Path, shown: str) -> None:
    """Copy the open folder or file ``fd`` to ``target`` (which does not exist yet)."""
    if stat.S_ISDIR(os.fstat(fd).st_mode):
        target.mkdir(exist_ok=True)
        for name in sorted(os.listdir(fd)):
            inside = f"{shown}/{name}" if shown != "." else name
            child = _open_entry(fd, name, inside)
            try:
                _copy_entry(child, target / name, inside)
            finally:
                os.close(child)
        return
    with open(target, "xb") as out:
        while chunk := os.read(fd, CHUNK):
            out.write(chunk)
