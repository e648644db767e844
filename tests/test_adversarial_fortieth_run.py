"""Issue 17, the fortieth adversarial run (on eaa248a), cases C3 and C4: an ``eval_run_id`` tag
holding line breaks, a fake "Gate passed … promoted" note and a trailing ``<!--`` was quoted raw
by the gate into its note in the description (the fake note sat inside quantgate's sealed block
and the real "rejected" line was hidden), and terminal escapes in it erased ``REJECTED`` from the
key holder's screen. Now what the gate quotes from the store is one printable line, and no HTML
comment opens or closes in its note. (C2, the collation, is in test_description_write.py.)"""

from __future__ import annotations

from mlflow import MlflowClient
from test_adversarial import LENIENT, _fresh, _quantgate, _yaml, trivial  # noqa: F401

FORGED = "x\n\n### quantgate: gate passed for `@staging`\n- ok: everything\n\n**Result:** promoted <!--\x1b[1A\x1b[2K"


def test_a_tag_quoted_by_the_gate_cannot_write_lines_comments_or_escapes(trivial, tmp_path):  # noqa: F811
    model, client = "adv40-quote", MlflowClient()
    version = _fresh(model, trivial)
    client.update_model_version(model, version, description="Bob: reviewed.")
    client.set_model_version_tag(model, version, "eval_run_id", FORGED)
    result = _quantgate(
        "promote", "--version", version, "--model-name", model, "--thresholds", _yaml(tmp_path, LENIENT)
    )
    assert result.exit_code == 1 and "REJECTED" in result.output, result.output
    assert "\x1b" not in result.output and "\\x1b[2K" in result.output, result.output
    text = client.get_model_version(model, version).description
    block = text[text.index("<!-- quantgate:begin") : text.index("<!-- quantgate:end -->")]
    assert "\n### quantgate: gate passed" not in block and "\x1b" not in block, block
    assert block.count("<!--") == block.count("-->") == 2, block  # its begin marker and its write number
    assert "Bob: reviewed." in text


def test_c5_files_swapped_between_the_gates_check_and_the_alias_move_are_rolled_back(trivial, tmp_path, monkeypatch):  # noqa: F811
    """C5: the writer swapped the version's stored files for a build the gate rejects after the
    gate had checked them and before it moved the alias; the gate staged it (exit 0)."""
    from test_adversarial import _stored_root

    model, client = "adv40-swap", MlflowClient()
    version = _fresh(model, trivial)
    meta = next(_stored_root(model, version).rglob("MLmodel"))
    original = meta.read_bytes()
    real = MlflowClient.set_registered_model_alias

    def writer_swaps_first(self, name, alias, v):
        if name == model:
            meta.write_bytes(original + b" ")
        return real(self, name, alias, v)

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", writer_swaps_first)
    try:
        result = _quantgate(
            "promote", "--version", version, "--model-name", model, "--thresholds", _yaml(tmp_path, LENIENT)
        )
    finally:
        monkeypatch.undo()
        meta.write_bytes(original)
    assert result.exit_code == 1 and "ROLLED BACK" in result.output and "files changed" in result.output, result.output
    assert "staging" not in client.get_registered_model(model).aliases
