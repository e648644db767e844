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
