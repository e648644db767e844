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
name then moves at most a link into the store; nothing outside it is written or changed. Other
stores (S3, a tracking server's proxied artifacts) are MLflow's to write.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
from pathlib import Path, PurePosixPath

from mlflow import MlflowClient

from quantgate.artifact_download import LinkInStoreError, local_folder

MODE = 0o644


def log_file(run_id: str, local_file: str | Path, artifact_path: str | None = None) -> None:
    """``MlflowClient().log_artifact(run_id, local_file, artifact_path)``, written as above."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    client = MlflowClient()
    root = local_folder(get_artifact_repository(client.get_run(run_id).info.artifact_uri))
    if root is None:
        client.log_artifact(run_id, str(local_file), artifact_path)
        return
    os.makedirs(root, exist_ok=True)  # where the store keeps the run: the store's to say
    folder = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for name in [p for p in PurePosixPath(artifact_path or "").parts if p not in ("", ".")]:
            if name == "..":
                raise LinkInStoreError(f"artifact path {artifact_path!r} climbs out of its run")
            try:
                os.mkdir(name, 0o755, dir_fd=folder)
            except FileExistsError:
                pass
            try:
                inner = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=folder)
            except OSError:
                raise LinkInStoreError(
                    f"{artifact_path} in run {run_id}'s artifacts is not a plain folder; nothing was logged"
                ) from None
            os.close(folder)
            folder = inner
        _write_into(folder, Path(local_file))
    finally:
        os.close(folder)


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


def log_dict(run_id: str, data: dict, artifact_file: str) -> None:
    """``MlflowClient().log_dict`` for a ``.json`` artifact, logged by :func:`log_file`."""
    path = PurePosixPath(artifact_file)
    with tempfile.TemporaryDirectory(prefix="quantgate-log-") as tmp:
        local = Path(tmp) / path.name
        local.write_text(json.dumps(data, indent=2), encoding="utf-8")
        parent = str(path.parent)
        log_file(run_id, local, None if parent in ("", ".") else parent)
