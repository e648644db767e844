"""User mistakes end in one line on stderr and exit status 2, from `quantgate` and `python -m` alike."""

from __future__ import annotations

import os
import subprocess
import sys

from click.testing import CliRunner

from flows.cli import cli


def _env(tmp_path) -> dict:
    # mlflow.set_experiment (the session store's fixture) exports MLFLOW_EXPERIMENT_ID; a child
    # process on a fresh store must not inherit an experiment id that does not exist there
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID")
    }
    return {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "HF_HUB_OFFLINE": "1"}


def test_missing_dataset_file_is_one_line_exit_2(tmp_path):
    missing = tmp_path / "nope" / "train.csv"
    proc = subprocess.run(
        [sys.executable, "-m", "flows.train", "--dataset", str(missing), "--max-epochs", "1"],
        cwd=tmp_path,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") and str(missing) in lines[-1]
    assert "Traceback" not in proc.stderr


def test_unknown_version_is_one_line_exit_2(store):
    result = CliRunner().invoke(cli, ["evaluate", "--version", "999", "--model-name", "no-such-model"])
    assert result.exit_code == 2, result.output
    assert "no version 999 of model 'no-such-model'" in result.output
    assert "Traceback" not in result.output


def test_debug_shows_the_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "flows.cli", "--debug", "evaluate", "--version", "abc!"],
        cwd=tmp_path,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "UserError" in proc.stderr


def test_main_with_a_step_that_fails_or_a_bad_thresholds_file_is_one_line_exit_2(tmp_path):
    """The ninth adversarial run: `main --max-epochs 0` printed the train step's one line and then
    MLflow's ExecutionException traceback (exit 1); a bad thresholds file was `Error: …`, exit 1,
    the status of a rejected gate."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("max_size_mb: 1\nmax_size_mb: 2\n")
    for extra in (["--max-epochs", "0"], ["--thresholds", str(bad)]):
        proc = subprocess.run(
            [sys.executable, "-m", "flows.cli", "main", "--train-limit", "16", *extra],
            cwd=tmp_path,
            env=_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert lines[-1].startswith("error: ") and "Traceback" not in proc.stderr, proc.stderr[-2000:]


def test_a_bugs_traceback_blanks_the_evidence_key_out(monkeypatch):
    """A bug keeps its traceback (exit 1), with the key blanked out: a message can quote a file's
    content (the thirty-ninth adversarial run had a lock timeout quote the key file)."""
    import click

    from flows.errors import GuardedGroup

    key = "0123456789abcdef" * 4
    monkeypatch.setenv("QUANTGATE_EVIDENCE_KEY", key)

    @click.group(cls=GuardedGroup)
    def group():
        pass

    @group.command()
    def boom():
        raise RuntimeError(f"a message quoting {key}")

    result = CliRunner().invoke(group, ["boom"])
    assert result.exit_code == 1, result.output
    assert "RuntimeError" in result.output and "Traceback" in result.output
    assert key not in result.output


def test_a_bugs_traceback_and_a_user_error_show_control_characters_escaped():
    """Store text a message quotes can hold terminal escapes (the forty-eighth adversarial run's
    crash printed a tag's clear-screen and colour codes raw to the key holder's terminal)."""
    import click

    from flows.errors import GuardedGroup
    from quantgate.errors import UserError

    @click.group(cls=GuardedGroup)
    def group():
        pass

    @group.command()
    def boom():
        raise RuntimeError("tag \x1b[2J\x1b[32mpromoted\x1b[0m")

    @group.command()
    def mistake():
        raise UserError("no version \x1b[2Jnine")

    bug = CliRunner().invoke(group, ["boom"])
    assert bug.exit_code == 1 and "Traceback" in bug.output, bug.output
    assert "\x1b" not in bug.output and "tag \\x1b[2J\\x1b[32mpromoted" in bug.output
    user = CliRunner().invoke(group, ["mistake"])
    assert user.exit_code == 2 and user.output.strip() == "error: no version \\x1b[2Jnine", user.output


def test_a_version_without_a_label_map_is_one_line_exit_2(store):
    # the forty-fifth adversarial run: `evaluate` of a version logged outside quantgate (no
    # artifacts/label_map.json) ended in MLflow's "No such artifact" traceback
    import mlflow

    model = os.path.join(os.path.dirname(__file__), "..", "trivial_model.py")
    with mlflow.start_run():
        mlflow.pyfunc.log_model(name="m", python_model=model, registered_model_name="no-label-map")
    result = CliRunner().invoke(
        cli, ["evaluate", "--version", "1", "--model-name", "no-label-map", "--dataset", "news9"]
    )
    assert result.exit_code == 2, result.output
    assert "version 1 has no readable label map" in result.output
    assert "Traceback" not in result.output
