"""Issue 17, the thirty-fifth adversarial run (on 06541f9): ``quantise`` loaded the FP32 parent
with ``mlflow.pyfunc.load_model``, which runs the model's stored ``serving_model.py``, without
checking it first. The writer edited the attested parent's stored code (and re-set its digest
tag), or registered a version of its own tagged ``variant=fp32`` that ``--source latest-fp32``
picked; the key holder's ``quantise`` (directly, or as a step of a keyed ``main`` with the key
withheld) ran it, and it read the key file. Now a keyed process, or a step one started, loads a
stored model only from files checked against the registry's digest and running only the
installed serving code, and with a key ``latest-fp32`` is the newest attested FP32 version."""

from __future__ import annotations

import mlflow
import pytest
from mlflow import MlflowClient
from test_adversarial import _quantgate
from test_adversarial_signed import KEY, _stored_copy_root, copy_pair

from flows.quantise import latest_fp32_version, load_parent
from quantgate.evidence_signing import key_withheld
from quantgate.model_files import ModelIntegrityError, digest, download, model_manifest

MODEL = "adv35"


@pytest.fixture(scope="module")
def attested(pipeline, tmp_path_factory):
    """The pipeline's FP32 and INT8 copied into ``adv35``, the FP32 copy attested under the key."""
    fp32, int8 = copy_pair(pipeline, MODEL)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QUANTGATE_EVIDENCE_KEY", KEY)
        assert _quantgate("attest", "--version", fp32, "--model-name", MODEL).exit_code == 0
    return {"fp32": fp32, "int8": int8}


def test_quantise_does_not_run_a_parents_stored_code_edited_after_attestation(attested, tmp_path, monkeypatch):
    """Cases 1 and 1b: code appended to the attested parent's stored serving_model.py, the
    digest tag re-set to match (tags are the writer's), then the key holder's quantise: the code
    ran and read the key. Now quantise refuses in one line, directly and as main's step."""
    marker = tmp_path / "ran-planted-code"
    code = _stored_copy_root(attested["fp32"], MODEL) / "serving_model.py"
    original, tag = code.read_bytes(), MlflowClient().get_model_version(MODEL, attested["fp32"]).tags["model_sha256"]
    code.write_bytes(original + f"\nopen({str(marker)!r}, 'w').write('ran')\n".encode())
    refit = digest(model_manifest(download(f"models:/{MODEL}/{attested['fp32']}", tmp_path / "dl")))
    MlflowClient().set_model_version_tag(MODEL, attested["fp32"], "model_sha256", refit)
    monkeypatch.setenv("QUANTGATE_EVIDENCE_KEY", KEY)
    try:
        refused = _quantgate(
            "quantise-onnx", "--source", attested["fp32"], "--model-name", MODEL, "--recipe", "onnx-fp32"
        )
        assert refused.exit_code != 0 and "refusing to load adv35 v" in refused.output, refused.output
        assert "serving_model.py" in refused.output
        with key_withheld():  # as a step of a keyed main: the key out of its environment
            with pytest.raises(ModelIntegrityError, match="serving_model.py"):
                with load_parent(MlflowClient().get_model_version(MODEL, attested["fp32"])):
                    pass
    finally:
        code.write_bytes(original)
        MlflowClient().set_model_version_tag(MODEL, attested["fp32"], "model_sha256", tag)
    assert not marker.exists()


def test_with_a_key_latest_fp32_is_the_newest_attested_version(attested, monkeypatch):
    """Case 1c: the writer's own version tagged variant=fp32 (here: a copy, never attested) was
    the newest, and `quantise --source latest-fp32` (the default) loaded it."""
    client = MlflowClient()
    planted = client.copy_model_version(f"models:/{MODEL}/{attested['fp32']}", MODEL)
    client.set_model_version_tag(MODEL, planted.version, "variant", "fp32")
    assert str(latest_fp32_version(MODEL).version) == str(planted.version)  # without a key: the newest tag
    monkeypatch.setenv("QUANTGATE_EVIDENCE_KEY", KEY)
    assert str(latest_fp32_version(MODEL).version) == str(attested["fp32"])
    mlflow.MlflowClient().delete_model_version(MODEL, planted.version)
