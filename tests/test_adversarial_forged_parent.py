"""Issue 17, the seventh adversarial run's last two holes (H1, H1b): a forged FP32 parent.

Parity limits compare a variant with its parent; a variant sharing a forged parent's defect
agrees with it perfectly. ``train`` runs without the evidence key, so before ``quantgate
attest`` nothing in the store vouched for a parent: a keyed evaluation, the gate, ``serve`` and
``score`` all accepted a label-swapped variant measured against a label-swapped "FP32" version
the attacker registered (H1), or against the real parent rewritten in the artifact store with
its digest tags re-set (H1b). Every test here that names H1 or H1b failed on 1857ca5. The
eighth run (helper-16, on adef176) then made `main` attest a forged version (H1: the train run's
version tag rewritten in the moment between the step and the attestation) and reuse a forged
train run (A13); those tests failed on adef176.

Tried the attacker's way: the artifact store's files, MLflow's public API and the `quantgate`
command line; the defender's way: the README's commands with the key set.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.entities import RunTag
from test_adversarial import RELATIVE, _holder, _one_error_line, _quantgate, _yaml
from test_adversarial_signed import COPY, KEY, _promote, _stored_copy_root, signed  # noqa: F401

from quantgate.data import dataset_digest, evaluated_digest, load_dataset

from conftest import TEST_MODEL


def _swap_classifier_rows(root: Path) -> None:
    """Swap the first two output rows of an FP32 model's classifier (its first two labels trade
    places) and fix meta.json's manifest, as the seventh run did to the real parent."""
    import yaml
    from safetensors.torch import load_file, save_file

    from quantgate.packaging import manifest

    weights = next(root.glob("artifacts/model/*.safetensors"))
    tensors = load_file(str(weights))
    for name in [n for n in tensors if n.split(".")[-2:-1] == ["classifier"]]:
        order = list(range(tensors[name].shape[0]))
        order[0], order[1] = 1, 0
        tensors[name] = tensors[name][order].contiguous()
    save_file(tensors, str(weights), metadata={"format": "pt"})
    artifacts = yaml.safe_load((root / "MLmodel").read_text())["flavors"]["python_function"]["artifacts"]
    meta_path = root / artifacts["meta"]["path"]
    meta = json.loads(meta_path.read_text())
    meta["manifest"] = manifest({k: str(root / spec["path"]) for k, spec in artifacts.items() if k != "meta"})
    meta_path.write_text(json.dumps(meta))


def _refit_tags(model: str, version: str) -> None:
    """What the attacker does after editing a version's files: record their digests as registered."""
    from quantgate.model_files import digest, model_manifest
    from quantgate.packaging import manifest_digest

    root = _stored_copy_root(model=model, version=version)
    meta = json.loads(next(root.glob("artifacts/meta.json")).read_text())
    client = MlflowClient()
    client.set_model_version_tag(model, version, "manifest_sha256", manifest_digest(meta["manifest"]))
    client.set_model_version_tag(model, version, "model_sha256", digest(model_manifest(root)))


def _register(model: str, source: str, version: str, tmp_path: Path, swap: bool = False, **tags: str) -> str:
    """A store writer's version: the source version's files (label-swapped with ``swap``) logged
    and registered anew (so they have files of their own: MLflow's copy_model_version shares
    them), with every tag of the source (an attestation included) and ``tags``."""
    import mlflow

    client = MlflowClient()
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{source}/{version}", dst_path=str(tmp_path / "dl")))
    if swap:
        _swap_classifier_rows(local)
    with mlflow.start_run(run_name="attacker") as run:
        mlflow.log_artifacts(str(local), "model")
    registered = str(mlflow.register_model(f"runs:/{run.info.run_id}/model", model).version)
    kept = {
        k: v for k, v in client.get_model_version(source, version).tags.items() if not k.startswith(("eval_", "gate."))
    }
    for key, value in {**kept, **tags}.items():
        client.set_model_version_tag(model, registered, key, value)
    _refit_tags(model, registered)
    return registered


def _own_pair(pipeline, model: str, tmp_path: Path) -> tuple[str, str]:
    """The pipeline's FP32 version and a candidate built from the same files (a variant of it)
    in ``model``, with files of their own."""
    fp32 = _register(model, TEST_MODEL, pipeline["fp32"].version, tmp_path / "fp32")
    candidate = _register(
        model, TEST_MODEL, pipeline["fp32"].version, tmp_path / "cand", variant="onnx-int8-dynamic", parent_version=fp32
    )
    return fp32, candidate


def _attest(model: str, version: str, monkeypatch) -> None:
    monkeypatch.setenv("QUANTGATE_EVIDENCE_KEY", KEY)
    result = _quantgate("attest", "--version", version, "--model-name", model)
    assert result.exit_code == 0 and f"attested v{version}" in result.output, result.output


def _evaluate(model: str, version: str):
    return _quantgate("evaluate", "--version", version, "--model-name", model, "--latency-runs", "5")


@pytest.mark.parametrize("attestation", ["copied", "deleted"])
def test_h1_a_forged_fp32_parent_is_not_measured_against(attestation, pipeline, monkeypatch, tmp_path):
    """Before: the attacker's label-swapped "FP32" version, and a candidate with the same swap naming
    it as parent, passed a keyed evaluation and every parity limit; the gate promoted the candidate."""
    model = f"adv7-h1-{attestation}"
    real_fp32, _ = _own_pair(pipeline, model, tmp_path)
    _attest(model, real_fp32, monkeypatch)  # the defender's real parent
    forged = _register(model, model, real_fp32, tmp_path / "forged", swap=True)  # variant=fp32, no parent_version
    if attestation == "deleted":
        MlflowClient().delete_model_version_tag(model, forged, "fp32_attestation")
    candidate = _register(model, model, forged, tmp_path / "cand2", variant="onnx-int8-dynamic", parent_version=forged)
    before = MlflowClient().get_model_version(model, candidate).tags

    line = _one_error_line(_evaluate(model, candidate))
    assert f"names v{forged}, which the evidence key does not vouch for as an FP32 parent" in line, line
    expected = "was never attested" if attestation == "deleted" else "edited after it was signed"
    assert expected in line and f"quantgate attest --version {forged}" in line, line
    assert MlflowClient().get_model_version(model, candidate).tags == before  # nothing measured, nothing signed
    promoted = _quantgate(
        "promote", "--version", candidate, "--model-name", model, "--thresholds", _yaml(tmp_path, RELATIVE)
    )
    # refused by the gate (1), or before it where the candidate carries the copied attestation: an
    # attested model is FP32, whatever its variant tag says (2, the twelfth run's H4)
    assert promoted.exit_code == (2 if attestation == "copied" else 1), promoted.output
    assert _holder(model, "staging") is None


def test_h1b_the_real_parent_rewritten_in_the_store_with_its_tags_reset_is_not_measured_against(
    pipeline, monkeypatch, tmp_path
):
    """Before: the real parent's classifier rows were swapped in the artifact store and its
    manifest_sha256/model_sha256 re-set; a candidate with the same swap then passed a keyed
    evaluation against it and was promoted."""
    model = "adv7-h1b"
    fp32, candidate = _own_pair(pipeline, model, tmp_path)
    _attest(model, fp32, monkeypatch)
    for version in (fp32, candidate):
        _swap_classifier_rows(_stored_copy_root(model=model, version=version))
        _refit_tags(model, version)
    line = _one_error_line(_evaluate(model, candidate))
    assert "does not vouch for as an FP32 parent" in line and "edited after it was signed" in line, line


def test_the_gate_refuses_parity_measured_against_a_parent_no_longer_attested(signed, monkeypatch):  # noqa: F811
    """The evaluation was signed against the attested parent; deleting the parent's attestation
    (or anything that changes it) afterwards withdraws the evidence."""
    monkeypatch.setenv("QUANTGATE_EVIDENCE_KEY", KEY)
    client = MlflowClient()
    attestation = client.get_model_version(COPY, signed["fp32"]).tags["fp32_attestation"]
    client.delete_model_version_tag(COPY, signed["fp32"], "fp32_attestation")
    try:
        result = _promote(signed["int8"], signed["thresholds"], "adv7-unattested")
        assert result.exit_code == 1, result.output
        assert f"measured against v{signed['fp32']}, which the evidence key does not vouch for" in result.output
        assert _holder(COPY, "adv7-unattested") is None
    finally:
        client.set_model_version_tag(COPY, signed["fp32"], "fp32_attestation", attestation)
    assert _promote(signed["int8"], signed["thresholds"], "adv7-unattested").exit_code == 0


def test_attest_refuses_without_a_key_a_variant_and_changed_files_in_one_line(pipeline, monkeypatch, tmp_path):
    model = "adv7-attest"
    fp32, int8 = _own_pair(pipeline, model, tmp_path)
    monkeypatch.delenv("QUANTGATE_EVIDENCE_KEY", raising=False)
    monkeypatch.delenv("QUANTGATE_EVIDENCE_KEY_FILE", raising=False)
    assert "none is set" in _one_error_line(_quantgate("attest", "--version", fp32, "--model-name", model))
    monkeypatch.setenv("QUANTGATE_EVIDENCE_KEY", KEY)
    variant = _one_error_line(_quantgate("attest", "--version", int8, "--model-name", model))
    assert f"it is a variant of v{fp32}" in variant, variant
    _swap_classifier_rows(_stored_copy_root(model=model, version=fp32))  # files changed, tags not re-set
    changed = _one_error_line(_quantgate("attest", "--version", fp32, "--model-name", model))
    assert "model files changed since registration" in changed, changed
    assert "fp32_attestation" not in MlflowClient().get_model_version(model, fp32).tags


def test_attesting_again_changes_nothing(signed, monkeypatch):  # noqa: F811
    monkeypatch.setenv("QUANTGATE_EVIDENCE_KEY", KEY)
    before = MlflowClient().get_model_version(COPY, signed["fp32"]).tags
    again = _quantgate("attest", "--version", signed["fp32"], "--model-name", COPY)
    assert again.exit_code == 0 and "already attested" in again.output, again.output
    assert MlflowClient().get_model_version(COPY, signed["fp32"]).tags == before


def test_main_reuses_a_train_run_under_a_key_only_when_it_registered_an_attested_version(
    pipeline, monkeypatch, tmp_path
):
    """The eighth run (A13, A2): a train run is main's to reuse by its inputs digest, which a store
    writer can copy onto a run of their own pointing at any version (an attested one too), or at
    none (a traceback stopped main). With a key, main reuses a run only when that run registered
    the version it names and the version is attested."""
    from flows.main import attested_fp32

    model = "adv7-reuse"
    fp32 = _register(model, TEST_MODEL, pipeline["fp32"].version, tmp_path)
    client = MlflowClient()
    own_run_id = client.get_model_version(model, fp32).run_id
    client.set_tag(own_run_id, "quantgate.version.fp32", fp32)  # as log_variant tags the train run
    own_run = client.get_run(own_run_id)
    experiment = client.get_experiment_by_name("quantgate-tests").experiment_id
    forged, empty = client.create_run(experiment), client.create_run(experiment)
    client.log_batch(forged.info.run_id, tags=[RunTag("quantgate.version.fp32", fp32)])
    accept = attested_fp32(model, KEY.encode())
    assert not accept(own_run)  # not attested yet
    _attest(model, fp32, monkeypatch)
    assert accept(own_run)
    assert not attested_fp32(model, KEY.encode(), {"max_epochs": 5})(own_run)  # other params, not signed by main
    assert not accept(client.get_run(forged.info.run_id))  # attested, but registered by another run
    assert not accept(client.get_run(empty.info.run_id))  # names no version: no traceback


def _train_receipt(model: str, version: str, path: Path) -> Path:
    """What main's train step writes to main's receipt file: its run, the version, the digests."""
    mv = MlflowClient().get_model_version(model, version)
    MlflowClient().set_tag(mv.run_id, "quantgate.version.fp32", version)  # as log_variant tags the run
    receipt = {"run_id": mv.run_id, "version": version, **{t: mv.tags[t] for t in ("manifest_sha256", "model_sha256")}}
    receipt["dataset_digest"] = dataset_digest(load_dataset("news9"))  # the data the step hashed
    path.write_text(json.dumps(receipt))
    return path


@pytest.mark.parametrize("race", ["tag-rewritten", "files-rewritten"])
def test_h1_eighth_run_main_attests_only_what_its_own_train_step_registered(race, pipeline, tmp_path):
    """The eighth run (H1): after main's train step finished and before main read its run's
    `quantgate.version.fp32` tag, the attacker pointed the tag at a forged FP32 version (or
    rewrote the fresh version's files and digest tags); main attested what the store then said."""
    from flows.main import attest_own
    from quantgate.model_files import ModelIntegrityError

    model = f"adv8-race-{race}"
    fp32 = _register(model, TEST_MODEL, pipeline["fp32"].version, tmp_path / "real")
    client = MlflowClient()
    train_run = client.get_model_version(model, fp32).run_id
    receipt = _train_receipt(model, fp32, tmp_path / "receipt.json")
    if race == "tag-rewritten":
        attacked = _register(model, model, fp32, tmp_path / "forged", swap=True)
        client.set_tag(train_run, "quantgate.version.fp32", attacked)
        expected = f"the train step registered v{fp32}, but its run's quantgate.version.fp32 tag now names v{attacked}"
    else:
        attacked = fp32
        _swap_classifier_rows(_stored_copy_root(model=model, version=fp32))
        _refit_tags(model, fp32)
        expected = "tag is not the digest the train step computed"
    with pytest.raises(ModelIntegrityError, match="not attesting") as refused:
        attest_own(model, client.get_run(train_run), receipt, KEY.encode())
    assert expected in str(refused.value), str(refused.value)
    assert "fp32_attestation" not in client.get_model_version(model, attacked).tags


def test_main_attests_the_version_its_train_step_registered(pipeline, tmp_path):
    from flows.main import attest_own

    model = "adv8-race-none"
    fp32 = _register(model, TEST_MODEL, pipeline["fp32"].version, tmp_path)
    client = MlflowClient()
    receipt = _train_receipt(model, fp32, tmp_path / "receipt.json")
    train_run = client.get_run(client.get_model_version(model, fp32).run_id)
    assert attest_own(model, train_run, receipt, KEY.encode()) == fp32
    tags = client.get_model_version(model, fp32).tags
    assert tags["fp32_attestation"].startswith("hmac-sha256:")
    # the digest the step computed is signed, not a run param any writer can add or rewrite
    assert tags["fp32_dataset_digest"] == json.loads(receipt.read_text())["dataset_digest"]


def test_with_a_key_an_fp32_version_is_promoted_on_its_own_only_when_attested(pipeline, monkeypatch, tmp_path):
    """`promote --allow-fp32` judges an FP32 version on its own figures. With a key it must also be
    one a key holder vouched for: a store writer's copy of the real model with two classes swapped
    (its attestation tag copied along) is no more the trained model than a forged parent is."""
    model = "adv8-allow-fp32"
    real = _register(model, TEST_MODEL, pipeline["fp32"].version, tmp_path / "real")
    _attest(model, real, monkeypatch)
    forged = _register(model, model, real, tmp_path / "forged", swap=True)
    # the copies were logged by runs that are not a training run: the key holder names the data
    evaluate = ("evaluate", "--model-name", model, "--latency-runs", "5", "--dataset", "news9")
    assert _quantgate(*evaluate, "--version", real).exit_code == 0
    line = _one_error_line(_quantgate(*evaluate, "--version", forged))  # since the twenty-seventh run
    assert "run only as an attested FP32 model" in line, line
    absolute = _yaml(tmp_path, {"min_macro_f1": 0.0, "max_latency_p95_ms": 5000.0})

    def promote(version: str):
        return _quantgate(
            "promote", "--version", version, "--allow-fp32", "--model-name", model, "--thresholds", absolute
        )

    refused = promote(forged)
    assert refused.exit_code == 1, refused.output
    assert _holder(model, "staging") is None
    passed = promote(real)
    assert passed.exit_code == 0 and _holder(model, "staging") == real, passed.output


def test_main_reuses_under_a_key_only_the_versions_own_signed_evaluation(signed):  # noqa: F811
    """The ninth run (N1, from the code): the key id in main's reuse digest is public, so a forged
    FINISHED evaluate run carrying that digest would be reused and the version left unevaluated."""
    from flows.main import signed_evaluation

    client = MlflowClient()
    news9 = evaluated_digest(load_dataset("news9"))  # the test split the pipeline trained with, and main's
    accept = signed_evaluation(COPY, signed["int8"], KEY.encode(), news9)
    evaluation = client.get_run(client.get_model_version(COPY, signed["int8"]).tags["eval_run_id"])
    assert accept(evaluation)
    forged = client.create_run(evaluation.info.experiment_id)
    assert not accept(client.get_run(forged.info.run_id))
    assert not signed_evaluation(COPY, signed["int8"], KEY[::-1].encode(), news9)(evaluation)  # another key


def test_main_reuses_under_a_key_only_an_evaluation_of_its_own_data(signed, capsys):  # noqa: F811
    """The thirty-second run's untried idea: the evaluation's signature did not name the data it
    measured, so a key holder's signed evaluation of other (trusted) data, given main's public
    reuse tags by a store writer, would be reused by main as the evaluation of main's data. The
    signature now binds the digest of the test split measured (tag ``quantgate.test_data_digest``), and
    main reuses an evaluation only of its own data; a writer who rewrites that tag breaks the
    signature, so the gate refuses the evaluation."""
    from flows.main import signed_evaluation
    from quantgate.contract import EVALUATED_DATA_TAG
    from registry_hooks.gate.provenance import parent_tags, signature_problems

    client = MlflowClient()
    mv = client.get_model_version(COPY, signed["int8"])
    evaluation = client.get_run(mv.tags["eval_run_id"])
    measured = evaluation.data.tags[EVALUATED_DATA_TAG]
    assert measured == evaluated_digest(load_dataset("news9"))
    other = evaluated_digest(load_dataset("support3"))  # main given other data than was measured
    assert not signed_evaluation(COPY, signed["int8"], KEY.encode(), other)(evaluation)
    assert "it measured another test split" in capsys.readouterr().out
    client.set_tag(evaluation.info.run_id, EVALUATED_DATA_TAG, other)  # the writer makes it "match"
    try:
        rewritten = client.get_run(evaluation.info.run_id)
        assert not signed_evaluation(COPY, signed["int8"], KEY.encode(), other)(rewritten)
        tags = rewritten.data.tags
        problems = signature_problems(KEY.encode(), mv, rewritten.info.run_id, tags, parent_tags(client, mv))
        assert problems and "does not match" in problems[0]
    finally:
        client.set_tag(evaluation.info.run_id, EVALUATED_DATA_TAG, measured)
