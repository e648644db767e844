"""Issue 17, the forty-fifth adversarial run (on 3a34665).

Case 1, the key leaked: MLflow's local artifact repository checks that a path stays inside the
store (resolving links) and then copies it with ``shutil.copy2``, which follows whatever link is
there by then. The attacker registered a version whose ``source`` was a folder of its own and
flipped its ``requirements.txt`` between a plain file and a link to the key file (it never opened
the key) while the key holder's ``evaluate`` downloaded it. The key holder's private copy then
held the key, and the refusal quoting the file's first line put 60 of the key's 64 characters
into the ``eval_status`` tag; the key's public id gave the last 4. quantgate now copies from a
local store without following any link, and blanks every 8-character piece of the key out of
what it prints and tags.

Case 2: a YAML list written over one signed version's stored ``MLmodel`` crashed ``compare`` and
the gate, for every version.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import threading
from pathlib import Path

import pytest
from mlflow import MlflowClient
from test_adversarial import RELATIVE, _gate, _quantgate, _stored_root, _yaml

from quantgate.evidence_signing import redact
from quantgate.model_files import ModelIntegrityError, download

from conftest import TEST_MODEL

SECRET = "0123456789abcdef" * 4  # what the key file holds; the attacker never reads it


def _attackers_version(pipeline, tmp_path: Path, name: str) -> tuple[Path, str]:
    """A folder of the attacker's own holding the INT8 version's files, registered as a version."""
    folder = download(f"models:/{TEST_MODEL}/{pipeline['int8'].version}", tmp_path / "attacker" / "m")
    client = MlflowClient()
    client.create_registered_model(name)
    return folder, client.create_model_version(name, str(folder)).version


def test_case_1_a_model_file_that_is_a_link_is_not_copied(pipeline, tmp_path):
    # deterministic: a link that stays inside the model's folder, which MLflow's check accepts and
    # its copy follows; quantgate copies no link at all, whatever it points at
    folder, version = _attackers_version(pipeline, tmp_path, "adv45-inner-link")
    (folder / "requirements.txt").unlink()
    (folder / "requirements.txt").symlink_to(folder / "artifacts" / "label_map.json")
    with pytest.raises(ModelIntegrityError, match="requirements.txt in the artifact store is a symbolic link"):
        download(f"models:/adv45-inner-link/{version}", tmp_path / "copy")


def test_case_1_a_file_flipped_to_a_link_to_a_secret_during_downloads_is_never_copied(pipeline, tmp_path):
    folder, version = _attackers_version(pipeline, tmp_path, "adv45-flip")
    secret = tmp_path / "keyholder" / "evidence.key"
    secret.parent.mkdir()
    secret.write_text(SECRET)
    swap = tmp_path / "attacker" / "swap"
    swap.symlink_to(secret)
    libc = ctypes.CDLL(None, use_errno=True)
    a, b = os.fsencode(folder / "requirements.txt"), os.fsencode(swap)
    stop = threading.Event()

    def toggle():  # renameat2(RENAME_EXCHANGE): the file and the link trade names, atomically
        while not stop.is_set():
            libc.renameat2(-100, a, -100, b, 2)

    flipper = threading.Thread(target=toggle, daemon=True)
    flipper.start()
    leaked, refused, copied = [], 0, 0
    try:
        for i in range(300):
            try:
                local = download(f"models:/adv45-flip/{version}", tmp_path / f"copy-{i}")
            except ModelIntegrityError as exc:
                assert SECRET[:8] not in str(exc), exc
                refused += "symbolic link" in str(exc)
                continue
            copied += 1
            leaked += [p for p in local.rglob("*") if p.is_file() and SECRET in p.read_text(errors="ignore")]
            shutil.rmtree(local)
    finally:
        stop.set()
        flipper.join()
    assert not leaked, leaked
    assert refused, "the flip never landed during a download; the test proved nothing"


def test_case_1_a_quoted_piece_of_the_key_is_blanked_out():
    key = SECRET.encode()
    line = f"its requirements.txt line {SECRET[:60]!r} is not a plain name==version"
    shown = redact(line, key)
    assert shown == "its requirements.txt line '[evidence key]' is not a plain name==version"
    assert redact(f"x {SECRET[20:28]} y", key) == "x [evidence key] y"  # 8 characters are enough
    assert redact("digest cdef0123… unrelated 3f2e", key) == "digest [evidence key]… unrelated 3f2e"
    assert redact("nothing of it here", key) == "nothing of it here"


def test_case_2_a_garbled_mlmodel_is_a_verdict_not_a_crash(pipeline, tmp_path):
    int8 = pipeline["int8"]
    path = _stored_root(TEST_MODEL, int8.version) / "MLmodel"
    original = path.read_bytes()
    path.write_text("- a YAML list\n- not the mapping MLflow writes\n")
    try:
        compared = _quantgate("compare", "--name", TEST_MODEL, "--out", str(tmp_path / "p.png"))
        assert compared.exit_code == 0 and "Traceback" not in compared.output, compared.output
        gated = _gate(TEST_MODEL, int8.version, _yaml(tmp_path, RELATIVE), "adv45-garbled", "--dry-run")
        assert gated.exit_code == 1 and "Traceback" not in gated.output, gated.output
        assert "REJECTED" in gated.output and "MLmodel" in gated.output, gated.output
    finally:
        path.write_bytes(original)
