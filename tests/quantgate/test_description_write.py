"""quantgate's description writes on a real sqlite registry: when another quantgate command
writes its block between one command's read and its write, the retry finds that newer block by
the tag read with the description, and the version keeps one block (the thirty-seventh
adversarial run found the tag read once and kept across retries: the retry could not find the
newer block and wrote a second one below it)."""

from __future__ import annotations

from mlflow import MlflowClient

from quantgate.contract import DESCRIPTION_BLOCK_TAG
from quantgate.description import BEGIN, END, put_card, put_note
from quantgate.description_write import update_description
from quantgate.evidence_signing import block_seal

KEY = b"k" * 32
PERSON_ABOVE = "Owner: alice. Do not serve before the audit."
PERSON_BELOW = "Audit ticket SEC-42."


def write(client: MlflowClient, put, text: str, *, meanwhile=None) -> bool:
    """One quantgate write of ``text`` (a card with put_card, a note with put_note) into m v1's
    description, as evaluate and the gate make it; ``meanwhile`` runs once, after this write's
    first read and before its first write."""
    seal = block_seal(KEY, "m", "1")
    pending = [meanwhile] if meanwhile else []

    def build(description: str | None, own: str | None) -> tuple[str, str]:
        built = put(description, text, own=own, seal=seal, owner="m v1")
        if pending:
            pending.pop()()
        return built

    return update_description(client, "m", "1", build, DESCRIPTION_BLOCK_TAG)


def test_a_block_written_meanwhile_is_replaced_not_joined_by_a_second(tmp_path):
    client = MlflowClient(
        tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", registry_uri=f"sqlite:///{tmp_path}/mlflow.db"
    )
    client.create_registered_model("m")
    client.create_model_version("m", str(tmp_path), description=f"{PERSON_ABOVE}\n\n{PERSON_BELOW}")
    card = "## m v1: onnx-int8-dynamic\n\ncard {n}\n<!-- end quantgate model card -->"
    assert write(client, put_card, card.format(n=1))
    # the gate reads the description and the tag; an evaluation writes its new card before the gate writes
    assert write(client, put_note, "gate: passed", meanwhile=lambda: write(client, put_card, card.format(n=2)))
    text = client.get_model_version("m", "1").description
    assert text.count(BEGIN) == 1 and text.count(END) == 1, text
    assert "card 2" in text and "card 1" not in text and "gate: passed" in text, text
    assert f"{PERSON_ABOVE}\n\n{PERSON_BELOW}" in text, text  # the person's text, byte for byte


def test_a_case_only_save_is_kept_whatever_collation_the_column_was_given(tmp_path):
    """The fortieth adversarial run gave ``model_versions.description`` the NOCASE collation by
    editing the sqlite schema: a person's case-only save then compared equal to what quantgate had
    read, and quantgate's write replaced it (3 of 3 runs)."""
    import sqlite3

    from quantgate.description_write import write_if_unchanged

    db = tmp_path / "mlflow.db"
    client = MlflowClient(tracking_uri=f"sqlite:///{db}", registry_uri=f"sqlite:///{db}")
    client.create_registered_model("m")
    client.create_model_version("m", str(tmp_path), description="alice: deploy on monday")
    con = sqlite3.connect(db, isolation_level=None)
    version = con.execute("PRAGMA schema_version").fetchone()[0]
    con.execute("PRAGMA writable_schema=ON")
    con.execute(
        "UPDATE sqlite_master SET sql = replace(sql, 'description VARCHAR(5000),', "
        "'description VARCHAR(5000) COLLATE NOCASE,') WHERE type='table' AND name='model_versions'"
    )
    con.execute(f"PRAGMA schema_version={version + 1}")
    con.execute("PRAGMA writable_schema=OFF")
    con.close()
    assert (
        "COLLATE NOCASE"
        in sqlite3.connect(db).execute("select sql from sqlite_master where name='model_versions'").fetchone()[0]
    )
    client.update_model_version("m", "1", description="Alice: Deploy on MONDAY")  # the person's save
    assert not write_if_unchanged(client, "m", "1", "alice: deploy on monday", "quantgate's rebuild of the old text")
    assert client.get_model_version("m", "1").description == "Alice: Deploy on MONDAY"
