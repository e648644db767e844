"""Issue 17, the forty-first adversarial run (on 5fb82fd).

A: the key holder's key file lay in the tracking store's folder. A store writer renamed it aside
(without reading it: a rename needs write access to the folder only) and put a read-only key of
its own in its place; it then signed an attestation and an evaluation of a build that answers one
label for every text, and the key holder's keyed `promote` staged it. A key file a store writer
could replace is now refused, as a thresholds file is, before it is read.

B: a person quoted quantgate's current block verbatim above it ("the card below is exactly what I
reviewed"); of the two identical sealed blocks the first, the person's, was rewritten. Identical
copies are now no block: a new one is written and both copies stay the person's text.

(D, a keyed `compare` vouching for a version whose files were swapped, is in
test_adversarial_eleventh_run.py, beside the keyed compare's other tests.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient
from test_adversarial import LENIENT, _fresh, _quantgate, _yaml, trivial  # noqa: F401

from quantgate.evidence_signing import EvidenceKeyError, load_key

PROJECT = Path(__file__).resolve().parents[1]
KEY = "a" * 32 + "0123456789abcdef0123456789abcdef"


def _key_file(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "evidence.key"
    path.write_text(KEY)
    path.chmod(0o400)
    return path


@pytest.mark.parametrize("uri", ["sqlite:///{store}/mlflow.db", "sqlite:///{store}/mlflow.db?x", "{store}/mlruns"])
def test_a_key_file_in_the_store_folder_is_refused_before_it_is_read(tmp_path, uri):
    store = tmp_path / "store"
    environ = {"QUANTGATE_EVIDENCE_KEY_FILE": str(_key_file(store)), "MLFLOW_TRACKING_URI": uri.format(store=store)}
    if uri.startswith("{store}"):  # a file store's root is the store: a key beside mlruns/ is outside it
        environ["QUANTGATE_EVIDENCE_KEY_FILE"] = str(_key_file(store / "mlruns" / "keys"))
    with pytest.raises(EvidenceKeyError, match="could be replaced by a store writer: .* tracking store's folder"):
        load_key(environ)


def test_a_key_file_another_user_could_rename_is_refused_and_a_private_one_is_read(tmp_path):
    shared = tmp_path / "shared"
    path = _key_file(shared)
    shared.chmod(0o777)  # anyone may rename the file in it
    uri = f"sqlite:///{tmp_path}/store/mlflow.db"
    try:
        with pytest.raises(EvidenceKeyError, match="writable by group or others"):
            load_key({"QUANTGATE_EVIDENCE_KEY_FILE": str(path), "MLFLOW_TRACKING_URI": uri})
    finally:
        shared.chmod(0o700)
    private = _key_file(tmp_path / "private")
    assert load_key({"QUANTGATE_EVIDENCE_KEY_FILE": str(private), "MLFLOW_TRACKING_URI": uri}) == KEY.encode()


def test_the_default_store_in_the_working_folder_counts_too(tmp_path, monkeypatch):
    """No $MLFLOW_TRACKING_URI: quantgate's default store is ./mlflow.db, so the working folder is the store's."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(EvidenceKeyError, match="tracking store's folder"):
        load_key({"QUANTGATE_EVIDENCE_KEY_FILE": str(_key_file(tmp_path))})


def test_case_a_the_key_holders_promote_refuses_a_key_file_beside_mlflow_db_in_one_line(tmp_path):
    """As the run had it: the key holder's documented command, the key file beside mlflow.db."""
    env = {
        **os.environ,
        "PYTHONPATH": str(PROJECT),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db",
        "QUANTGATE_EVIDENCE_KEY_FILE": str(_key_file(tmp_path)),
    }
    env.pop("QUANTGATE_EVIDENCE_KEY", None)
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", "promote", "--version", "1", "--dry-run"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1, lines
    assert "could be replaced by a store writer" in lines[0] and KEY not in lines[0], lines


def test_case_b_a_verbatim_quote_of_the_block_above_it_is_kept(trivial, tmp_path):  # noqa: F811
    model, client = "adv41-quote", MlflowClient()
    version = _fresh(model, trivial)
    thresholds = _yaml(tmp_path, LENIENT)
    args = ("promote", "--version", version, "--model-name", model, "--thresholds", thresholds)
    assert _quantgate(*args).exit_code == 0  # writes the block with its note
    block = client.get_model_version(model, version).description
    assert block.startswith("<!-- quantgate:begin"), block
    person = "Sign-off (Ana): the card below is exactly what I reviewed and approved:\n" + block
    client.update_model_version(model, version, description=person + "\n\n" + block)
    result = _quantgate(*args)
    assert result.exit_code == 0, result.output
    after = client.get_model_version(model, version).description
    assert after.startswith(person), after[: len(person) + 200]


def revived_older_tag(model: str, trivial, thresholds: str, writer=lambda version: None) -> tuple[str, str]:  # noqa: F811
    """Run 41's case C up to the key holder's last gate: a person's verbatim quote of quantgate's
    block below it, quantgate's next write, then the writer deletes quantgate's blocks, puts the
    older block's tag back and does ``writer(version)``. Returns the version and the quote."""
    client = MlflowClient()
    version = _fresh(model, trivial)
    args = ("promote", "--version", version, "--model-name", model, "--thresholds", thresholds)
    assert _quantgate(*args).exit_code == 0
    mv = client.get_model_version(model, version)
    old_block, old_tag = mv.description, mv.tags["description_block_sha256"]
    quote = (
        "For the record (Ana): the card I approved, verbatim:\n" + old_block + "\n-- end of my quote, please keep --"
    )
    client.update_model_version(model, version, description=old_block + "\n\n" + quote)
    assert _quantgate(*args).exit_code == 0
    mv = client.get_model_version(model, version)  # the block and its copy: neither taken, a new block below
    assert mv.tags["description_block_sha256"] != old_tag, mv.description
    assert mv.description.startswith(old_block + "\n\n" + quote), mv.description
    client.update_model_version(model, version, description=quote)  # quantgate's blocks (its own text) removed
    client.set_model_version_tag(model, version, "description_block_sha256", old_tag)
    writer(version)
    assert _quantgate(*args).exit_code == 0
    return version, quote


def test_case_c_an_older_blocks_tag_put_back_after_deleting_the_block_does_not_take_a_persons_quote(trivial, tmp_path):  # noqa: F811
    """C: a person quoted quantgate's block verbatim below it; after quantgate's next write the
    store writer deleted quantgate's blocks and put the older block's tag back, so the person's
    quote was the newest block of its owner whose seal matched, and the key holder's next gate
    rewrote it. This machine remembers the seals it replaced."""
    version, quote = revived_older_tag("adv41-revive", trivial, _yaml(tmp_path, LENIENT))
    assert MlflowClient().get_model_version("adv41-revive", version).description.startswith(quote)
