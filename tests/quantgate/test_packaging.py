"""quantgate.packaging: a variant is logged into a local store through no link a writer planted.

MLflow's ``log_model`` copies the saved model into the logged model's folder file by file with
``shutil.copy2``: it writes through a link at a file's name and then sets the mode by that name.
The logged model's id is in the tracking database before the copy starts, so a store writer who
watches the database has the whole of ``save_model`` to plant links in the folder-to-be.
"""

from __future__ import annotations

import sqlite3
import stat
import threading
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import mlflow

from quantgate.packaging import log_variant


def _plant_links_in_new_logged_models(db: Path, key: Path, elsewhere: Path, stop: threading.Event) -> list[str]:
    """The writer: poll the store's database; in each new logged model's folder put a link to the
    key at ``MLmodel`` and a link to ``elsewhere`` at ``artifacts``."""
    planted: list[str] = []

    def run() -> None:
        seen: set[str] = set()
        while not stop.is_set():
            with sqlite3.connect(db) as con:
                rows = con.execute("SELECT model_id, artifact_location FROM logged_models").fetchall()
            for model_id, location in rows:
                if model_id in seen:
                    continue
                seen.add(model_id)
                root = Path(unquote(urlparse(location).path))
                try:
                    root.mkdir(parents=True, exist_ok=True)
                    (root / "MLmodel").symlink_to(key)
                    (root / "artifacts").symlink_to(elsewhere, target_is_directory=True)
                    planted.append(model_id)
                except OSError:
                    pass  # too late: the copy got there first
            time.sleep(0.001)

    threading.Thread(target=run, daemon=True).start()
    return planted


def test_links_a_writer_plants_in_a_new_logged_models_folder_are_not_written_through(store, tmp_path):
    key = tmp_path / "evidence.key"
    key.write_text("k" * 64)
    key.chmod(0o400)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    model, tokenizer = tmp_path / "model", tmp_path / "tokenizer"
    model.mkdir()
    tokenizer.mkdir()
    (model / "weights.bin").write_bytes(b"w" * 1024)
    (tokenizer / "vocab.txt").write_text("[PAD]\n")
    stop = threading.Event()
    planted = _plant_links_in_new_logged_models(store / "mlflow.db", key, elsewhere, stop)
    outcome = None
    try:
        with mlflow.start_run():
            try:
                log_variant(
                    model_path=model,
                    tokenizer_dir=tokenizer,
                    runtime="torch",
                    variant="fp32",
                    precision="fp32",
                    registered_model_name="planted",
                    labels=["a", "b"],
                )
                outcome = "logged"
            except Exception as exc:  # noqa: BLE001 - refusing the planted folder is a fine outcome
                outcome = str(exc)
    finally:
        stop.set()
    assert planted, "the writer never got to the folder first"
    assert key.read_text() == "k" * 64 and stat.S_IMODE(key.stat().st_mode) == 0o400
    assert list(elsewhere.iterdir()) == [], outcome
    assert "is not a plain folder" in outcome
