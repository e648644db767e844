"""Issue 17, the forty-third adversarial run (on b14d4a6).

Cases 1, 3, 4 and 5 went through MLflow's own servers run as the key holder's user: `mlflow ui`
served the key file through a version whose source was the key's folder (and wrote files through
a run's artifact_uri), and a plain `mlflow models serve` ran edited stored code, which read the key
file named in another keyed process's environment. quantgate cannot change what those servers
serve; the commands it prints now say, with a key set, to run them as a user who cannot read the
key file, and the README says why. Case 2: a `variant` tag's terminal escapes redrew a row of the
keyed `compare` table (and `attest` printed tags raw); store text is now shown as one printable
line there too."""

from __future__ import annotations

import datetime as dt

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion, ModelVersionTag
from test_adversarial import _fresh, _quantgate, trivial  # noqa: F401

from flows.attest import describe
from quantgate.evidence_signing import plain_mlflow_command

ESCAPES = "int8\x1b[1A\x1b[2K\rforged"


def test_case_2_compare_prints_a_tags_terminal_escapes_as_text(trivial, tmp_path):  # noqa: F811
    model, client = "adv43-escapes", MlflowClient()
    version = _fresh(model, trivial)
    client.set_model_version_tag(model, version, "variant", ESCAPES)
    result = _quantgate("compare", "--name", model, "--out", str(tmp_path / "p.png"))
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output and "\r" not in result.output, repr(result.output)
    assert "int8\\x1b[1A\\x1b[2K\\rforged" in result.output, result.output


def test_case_2_attest_prints_a_versions_tags_as_one_printable_line():
    now = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
    tags = [ModelVersionTag("variant", ESCAPES), ModelVersionTag("dataset", "x\ny")]
    mv = ModelVersion("m", "3", now, tags=tags, run_id="r")
    line = describe(mv)
    assert "\x1b" not in line and "\n" not in line and "\\x1b[1A" in line, repr(line)


def test_cases_1_and_3_printed_mlflow_commands_say_where_the_key_is_to_run_as_another_user():
    keyed = plain_mlflow_command(
        "ui --backend-store-uri sqlite:////s/mlflow.db", environ={"QUANTGATE_EVIDENCE_KEY": "k"}
    )
    plain = plain_mlflow_command("ui --backend-store-uri sqlite:////s/mlflow.db", environ={})
    assert keyed.endswith("# as a user who cannot read the evidence key file"), keyed
    assert "#" not in plain and "env -u QUANTGATE_EVIDENCE_KEY " in keyed, (plain, keyed)
