"""Issue 17, what the eleventh and twelfth adversarial runs found (descriptions are in
tests/quantgate/test_description.py, `score --overwrite` in tests/quantgate/test_score_io.py, a
pass on an older evaluation in tests/test_adversarial_signed.py): command-line mistakes that
ended in a traceback or, worse, marked the promoted version's evaluation failed; a refusal that
logged a run first; a lock file in a folder that does not exist; `compare` showing figures the
evidence key does not vouch for; the FP32 model retagged as a variant; `attest` trusting the
run a version names; re-evaluation on request until noise passes. Tried as the adversary did:
the `quantgate` command line and MLflow's public API."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.entities import ViewType
from test_adversarial import _one_error_line, _quantgate
from test_adversarial_signed import copy_pair

KEY = "e" * 20 + "0123456789abcdef0123"
MODEL = "adv11"


@pytest.fixture(scope="module")
def evaluated(pipeline):
    """The pipeline's two versions copied into their own model: the FP32 copy attested, the
    INT8 copy evaluated with the key."""
    fp32, int8 = copy_pair(pipeline, MODEL)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QUANTGATE_EVIDENCE_KEY", KEY)
        assert _quantgate("attest", "--version", fp32, "--model-name", MODEL).exit_code == 0
        result = _quantgate("evaluate", "--version", int8, "--model-name", MODEL, "--latency-runs", "5")
    assert result.exit_code == 0, result.output
    return {"fp32": fp32, "int8": int8}


def _runs() -> int:
    client = MlflowClient()
    ids = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    return len(client.search_runs(ids, run_view_type=ViewType.ALL, max_results=50_000))


def _tags(version: str) -> dict[str, str]:
    return dict(MlflowClient().get_model_version(MODEL, version).tags)


@pytest.mark.parametrize(
    "mistake",
    [
        ["--latency-runs", "0"],
        ["--latency-runs", "-5"],
        ["--threads", "0"],
        ["--text-column", "nope"],  # ignored under --dataset auto before: evaluated on `text`, exit 0
    ],
)
def test_an_evaluate_mistake_is_refused_before_a_run_and_leaves_the_version_alone(evaluated, monkeypatch, mistake):
    """H4: `evaluate --latency-runs 0` ended in the evaluator plugin's traceback inside the run,
    left a FAILED run and tagged the version's evaluation failed, so the next gate took
    @staging away from the promoted version."""
    monkeypatch.setenv("QUANTGATE_EVIDENCE_KEY", KEY)
    before, runs = _tags(evaluated["int8"]), _runs()
    result = _quantgate("evaluate", "--version", evaluated["int8"], "--model-name", MODEL, *mistake)
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert mistake[0] in result.output
    assert _tags(evaluated["int8"]) == before and _runs() == runs


def test_quantise_from_a_variant_is_refused_before_a_run_is_logged(evaluated):
    """H6: `quantise-onnx --source <a variant>` refused, but only after logging a quantise run."""
    runs = _runs()
    line = _one_error_line(_quantgate("quantise-onnx", "--source", evaluated["int8"], "--model-name", MODEL))
    assert "FP32" in line and f"--source {evaluated['fp32']}" in line
    assert _runs() == runs


def test_serve_on_a_port_out_of_range_is_a_usage_error(evaluated):
    """H6: `serve --port 99999` ended in socket's OverflowError traceback."""
    result = _quantgate("serve", "--model", f"models:/{MODEL}/{evaluated['int8']}", "--port", "99999")
    assert result.exit_code == 2 and "Traceback" not in result.output and "--port" in result.output


def test_a_lock_file_in_a_folder_that_does_not_exist_is_refused(evaluated, monkeypatch, tmp_path):
    """A typo in --lock-file created its folders: a lock no other gate shares, so two gates could
    promote at once."""
    monkeypatch.setenv("QUANTGATE_EVIDENCE_KEY", KEY)
    missing = tmp_path / "no-such-folder" / "gate.lock"
    result = _quantgate("promote", "--version", evaluated["int8"], "--model-name", MODEL, "--lock-file", str(missing))
    assert result.exit_code == 2 and "does not exist" in result.output, result.output
    assert not missing.parent.exists()


def test_compare_marks_figures_and_aliases_the_key_does_not_vouch_for(evaluated, monkeypatch, tmp_path):
    """H5: with the key, `compare` showed a forged evaluation run's figures (F1 0.999) and a
    hand-set alias on the version with no mark, in the table and the plot a person picks from."""
    import mlflow

    client = MlflowClient()
    with mlflow.start_run(run_name="forged-evaluation") as run:
        mlflow.log_metrics({"macro_f1": 0.999, "accuracy": 0.999, "latency_p50_ms": 0.5, "latency_p95_ms": 0.6})
    fp32 = evaluated["fp32"]
    client.set_model_version_tag(MODEL, fp32, "eval_run_id", run.info.run_id)
    client.set_model_version_tag(MODEL, fp32, "eval_status", "complete")
    client.set_registered_model_alias(MODEL, "adv11-fake", fp32)
    plot = str(tmp_path / "p.png")
    keyless = _quantgate("compare", "--name", MODEL, "--out", plot)
    assert keyless.exit_code == 0 and "not vouched" not in keyless.output, keyless.output
    monkeypatch.setenv("QUANTGATE_EVIDENCE_KEY", KEY)
    keyed = _quantgate("compare", "--name", MODEL, "--out", plot)
    assert keyed.exit_code == 0, keyed.output
    assert "@adv11-fake (no pass)" in keyed.output and "figures not vouched for by the key" in keyed.output
    note = next(line for line in keyed.output.splitlines() if "does not vouch for the figures of" in line)
    assert f"v{fp32}" in note and f"v{evaluated['int8']}," not in note and not note.endswith(f"v{evaluated['int8']}")


def test_fortieth_c1_compare_does_not_vouch_for_a_figure_relogged_on_a_signed_run(evaluated, monkeypatch, tmp_path):
    """The fortieth adversarial run re-logged p95 0.42 ms on the int8's signed evaluation run;
    the keyed `compare` showed and plotted it as vouched for (the gate refused the same run)."""
    client = MlflowClient()
    run_id = client.get_model_version(MODEL, evaluated["int8"]).tags["eval_run_id"]
    original = client.get_run(run_id).data.metrics["latency_p95_ms"]
    monkeypatch.setenv("QUANTGATE_EVIDENCE_KEY", KEY)
    before = _quantgate("compare", "--name", MODEL, "--out", str(tmp_path / "before.png"))
    client.log_metric(run_id, "latency_p95_ms", 0.42)
    try:
        after = _quantgate("compare", "--name", MODEL, "--out", str(tmp_path / "after.png"))
    finally:
        client.log_metric(run_id, "latency_p95_ms", original)
    row = next(line for line in after.output.splitlines() if line.lstrip().startswith(f"{evaluated['int8']} "))
    assert "not vouched" not in next(
        line for line in before.output.splitlines() if line.lstrip().startswith(f"{evaluated['int8']} ")
    )
    assert "figures not vouched for by the key" in row, after.output


def test_fortyfirst_d_compare_does_not_vouch_for_a_version_whose_files_were_swapped(evaluated, monkeypatch, tmp_path):
    """The forty-first adversarial run copied a degraded graph over a signed version's stored
    files; the keyed `compare` still showed and plotted its figures as vouched for (the gate,
    which hashes the files, rejected it)."""
    from urllib.parse import unquote, urlparse

    stored = MlflowClient().get_model_version_download_uri(MODEL, evaluated["int8"])
    meta = next(Path(unquote(urlparse(stored).path)).rglob("meta.json"))
    original = meta.read_bytes()
    monkeypatch.setenv("QUANTGATE_EVIDENCE_KEY", KEY)
    meta.write_bytes(original.replace(b"{", b"{ ", 1))
    try:
        after = _quantgate("compare", "--name", MODEL, "--out", str(tmp_path / "after.png"))
    finally:
        meta.write_bytes(original)
    row = next(line for line in after.output.splitlines() if line.lstrip().startswith(f"{evaluated['int8']} "))
    assert after.exit_code == 0 and "figures not vouched for by the key" in row, after.output


@pytest.mark.parametrize(
    "command",
    [
        ["main", "--latency-runs", "0"],
        ["hooks", "serve", "--latency-runs", "0"],  # every re-evaluation would fail, and its gate demote
        ["hooks", "serve", "--queue-size", "0"],
        ["hooks", "serve", "--max-age-s", "0"],
        ["serve", "--port", "0"],
    ],
)
def test_numbers_out_of_range_are_usage_errors(command):
    result = _quantgate(*command)
    assert result.exit_code == 2 and "Traceback" not in result.output and command[-2] in result.output, result.output


def test_compare_of_a_model_that_does_not_exist_is_one_line_and_creates_nothing(evaluated):
    """Fourteenth run, U3: `compare --name nope` created an empty experiment `nope` and exited 1."""
    line = _one_error_line(_quantgate("compare", "--name", "nope-adv14"))
    assert "no versions of 'nope-adv14'" in line
    assert MlflowClient().get_experiment_by_name("nope-adv14") is None


@pytest.mark.parametrize("out", ["notes.txt", "no-such-folder/pareto.png"])
def test_compare_refuses_a_plot_path_it_cannot_write_before_reading_anything(out):
    """Fifteenth run, O1: `compare --out notes.txt` (or into a missing folder) printed the table
    and then ended in matplotlib's traceback with exit 1."""
    result = _quantgate("compare", "--name", "nope-adv15", "--out", out)
    assert result.exit_code == 2 and "Traceback" not in result.output and "--out" in result.output, result.output


def test_unmeasured_only_with_a_malformed_digest_tag_is_one_line(evaluated):
    """Fifteenth run, U1: a `model_sha256` tag holding a quote broke the search filter of
    `evaluate --unmeasured-only` (the receiver's path) with a traceback."""
    client = MlflowClient()
    copy = client.copy_model_version(f"models:/{MODEL}/{evaluated['int8']}", MODEL)
    client.set_model_version_tag(MODEL, copy.version, "model_sha256", "ab'cd")
    command = ["evaluate", "--version", str(copy.version), "--model-name", MODEL, "--unmeasured-only"]
    assert "is not a SHA-256 digest" in _one_error_line(_quantgate(*command))


@pytest.mark.parametrize(
    ("parent", "why"),
    [
        (None, "no parent_version tag"),
        ("fp32", "is the version itself"),
        ("int8", "attested as an FP32 model"),
    ],
)
def test_the_fp32_model_retagged_as_a_variant_is_not_a_candidate(evaluated, monkeypatch, parent, why):
    """Twelfth run, H4: setting `variant` on the FP32 version made `--candidates` gate it, and a
    thresholds file with only an F1 floor gave it a signed pass."""
    monkeypatch.setenv("QUANTGATE_EVIDENCE_KEY", KEY)
    client, fp32 = MlflowClient(), evaluated["fp32"]
    client.set_model_version_tag(MODEL, fp32, "variant", "onnx-int8-dynamic")
    if parent:
        client.set_model_version_tag(MODEL, fp32, "parent_version", evaluated[parent])
    try:
        gated = _quantgate("promote", "--candidates", "--model-name", MODEL, "--dry-run")
        assert f"v{fp32} " not in gated.output and f"v{evaluated['int8']} " in gated.output, gated.output
        line = _one_error_line(_quantgate("promote", "--version", fp32, "--model-name", MODEL, "--dry-run"))
        assert "not a quantised variant" in line and why in line
    finally:
        client.set_model_version_tag(MODEL, fp32, "variant", "fp32")
        if parent:
            client.delete_model_version_tag(MODEL, fp32, "parent_version")


@pytest.mark.parametrize("spelled", ["1", "01", " 1", "+1", "\u0661"])
def test_a_self_parent_in_any_spelling_is_not_a_variant(spelled):
    """Thirteenth run, H3: `+1` and an Arabic-Indic 1 got past the self-parent check (MLflow reads
    both as version 1)."""
    from registry_hooks.gate.provenance import variant_problem

    assert "is the version itself" in variant_problem({"variant": "onnx-int8-dynamic", "parent_version": spelled}, "1")


def test_attest_refuses_files_registered_under_another_runs_name(evaluated, monkeypatch, tmp_path):
    """Twelfth run, H3: a label-swapped copy registered with the real train run's id; `attest`
    printed the same origin as for the real model and signed it."""
    import mlflow

    monkeypatch.setenv("QUANTGATE_EVIDENCE_KEY", KEY)
    client = MlflowClient()
    real = client.get_model_version(MODEL, evaluated["fp32"])
    files = mlflow.artifacts.download_artifacts(f"models:/{MODEL}/{real.version}", dst_path=str(tmp_path / "copy"))
    with mlflow.start_run(run_name="attacker") as run:
        mlflow.log_artifacts(files, "model")
    forged = client.create_model_version(
        MODEL, f"{run.info.artifact_uri}/model", run_id=real.run_id, tags={"variant": "fp32", "dataset": "news9"}
    )
    line = _one_error_line(_quantgate("attest", "--version", forged.version, "--model-name", MODEL))
    assert f"it names run {real.run_id}, but its files were logged outside it" in line
    assert "fp32_attestation" not in client.get_model_version(MODEL, forged.version).tags
    # the thirteenth run: the files logged as a model "of" the train run, and the run re-tagged
    logged = client.create_logged_model(experiment_id=run.info.experiment_id, source_run_id=real.run_id)
    client.log_model_artifacts(logged.model_id, files)
    again = client.create_model_version(
        MODEL, f"models:/{logged.model_id}", run_id=real.run_id, tags={"variant": "fp32", "dataset": "news9"}
    )
    recorded = client.get_run(real.run_id).data.tags.get("quantgate.version.fp32")
    client.set_tag(real.run_id, "quantgate.version.fp32", again.version)  # the pipeline's train run: put back
    try:
        line = _one_error_line(_quantgate("attest", "--version", again.version, "--model-name", MODEL))
    finally:
        client.set_tag(real.run_id, "quantgate.version.fp32", recorded)
    assert f"already registered v{real.version}, which is attested" in line


def test_reevaluation_on_request_is_a_key_holders_decision(evaluated, monkeypatch):
    """Twelfth run, H2: anyone who can write a tag can set `quantgate.reevaluate`; the receiver
    (holding the key) measured the same files again each time, and the third try's noise passed."""
    from registry_hooks.webhooks.events import REEVALUATE_TAG, Job
    from registry_hooks.webhooks.receiver import Receiver

    monkeypatch.setenv("QUANTGATE_EVIDENCE_KEY", KEY)
    runs = _runs()
    receiver = Receiver(secret="s" * 32, model_name=MODEL, thresholds=None, tag_wait_s=0)
    outcome = receiver.run_job(Job(MODEL, evaluated["int8"], f"tag {REEVALUATE_TAG}"))
    assert outcome.startswith("skipped: with an evidence key") and _runs() == runs


def test_a_copy_of_measured_files_is_not_measured_again_by_the_receiver(evaluated, monkeypatch):
    """Fourteenth run, W1: with the key, the receiver refuses `quantgate.reevaluate`, but a writer
    registered copies of a rejected version (`copy_model_version`, same files and tags) and the
    receiver measured each one: the second copy's noise passed and it took @staging. With a key
    it now measures only files no evaluation has measured (also with the copy's digest tag
    deleted), and the gate rejects the copy as not evaluated."""
    from registry_hooks.webhooks.events import Job
    from registry_hooks.webhooks.receiver import Receiver

    monkeypatch.setenv("QUANTGATE_EVIDENCE_KEY", KEY)
    client = MlflowClient()
    receiver = Receiver(secret="s" * 32, model_name=MODEL, thresholds=None, tag_wait_s=0)
    for delete_digest in (False, True):
        copy = client.copy_model_version(f"models:/{MODEL}/{evaluated['int8']}", MODEL)
        for tag, value in _tags(evaluated["int8"]).items():
            if not tag.startswith(("eval_", "gate.", "hooks.")) and not (delete_digest and tag == "model_sha256"):
                client.set_model_version_tag(MODEL, copy.version, tag, value)
        outcome = receiver.run_job(Job(MODEL, str(copy.version), "model_version.created"))
        assert "were measured before" in outcome and "gate rejected" in outcome, outcome
        assert _tags(str(copy.version))["gate.decision.staging"].startswith("rejected")
        assert not client.get_model_version(MODEL, copy.version).aliases
        ids = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
        measured = f"params.model_uri = 'models:/{MODEL}/{copy.version}'"
        assert not client.search_runs(ids, filter_string=measured, run_view_type=ViewType.ALL)


def test_an_evaluation_killed_while_measuring_supersedes_the_earlier_one(evaluated, monkeypatch, tmp_path):
    """Thirteenth run, A2: `evaluate` logged `model_uri` (what the gate's search for newer
    evaluations finds) only after measuring, so an evaluation killed (or failed) while measuring
    was invisible, and the earlier pass still counted whatever the newer one would have shown."""
    import json
    import subprocess
    import sys
    import time

    from test_adversarial import RELATIVE

    monkeypatch.setenv("QUANTGATE_EVIDENCE_KEY", KEY)
    client, version = MlflowClient(), evaluated["int8"]
    before, uri = _tags(version), f"models:/{MODEL}/{version}"
    command = ["evaluate", "--version", version, "--model-name", MODEL, "--latency-runs", "100000"]
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", *command], stdout=subprocess.DEVNULL)
    try:
        for _ in range(600):
            ids = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
            if client.search_runs(ids, filter_string=f"params.model_uri = '{uri}' and attributes.status = 'RUNNING'"):
                break
            assert proc.poll() is None, "the evaluation ended before it was killed"
            time.sleep(0.5)
        else:
            pytest.fail("the evaluation never started measuring")
    finally:
        proc.kill()
        proc.wait()
    assert _tags(version) == before  # killed: the version's tags still name the earlier evaluation
    thresholds = tmp_path / "relative.yaml"
    thresholds.write_text(json.dumps(RELATIVE))
    promote = ["promote", "--version", version, "--model-name", MODEL, "--thresholds", str(thresholds)]
    result = _quantgate(*promote, "--alias", "adv13-a2")
    assert result.exit_code == 1 and "is not the version's latest" in result.output, result.output
    assert _quantgate("evaluate", "--version", version, "--model-name", MODEL, "--latency-runs", "5").exit_code == 0
    assert "is not the version's latest" not in _quantgate(*promote, "--alias", "adv13-a2").output


@pytest.mark.parametrize(
    ("command", "env"),
    [
        (["hooks", "register", "--url", "ftp://x/"], {"QUANTGATE_WEBHOOK_SECRET": "w" * 40}),
        (["hooks", "register", "--url", "https://127.0.0.1/"], {"QUANTGATE_WEBHOOK_SECRET": "short"}),
    ],
)
def test_hooks_mistakes_are_one_line(store, monkeypatch, command, env):
    """Twelfth run, H6: a short secret exited 1; a URL scheme the store refuses was a traceback."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    _one_error_line(_quantgate(*command))


def test_score_with_a_master_spark_cannot_reach_is_one_line():
    """Twelfth run, H7: `score --master bogus://x` ended in PySpark's traceback."""
    import os

    from flows.score import spark_session
    from quantgate.errors import UserError

    saved = dict(os.environ)  # spark_session sets its workers' variables in this process
    try:
        with pytest.raises(UserError, match=r"cannot start Spark \(--master bogus://x\)"):
            spark_session("bogus://x", batch_size=8, threads=1, partitions=None)
    finally:
        os.environ.clear()
        os.environ.update(saved)
