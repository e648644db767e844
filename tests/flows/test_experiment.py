"""One experiment for every step: `mlflow run` steps, `main`'s children and the CLI all log to
the experiment named after the registered model unless the user names another."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tomllib
from importlib.metadata import entry_points
from pathlib import Path

import yaml
from mlflow import MlflowClient

from flows.experiment_provider import project_model_name
from quantgate.tracking import experiment_name

from conftest import LENIENT, REPO

MLFLOW = str(Path(sys.executable).parent / "mlflow")
GROUP = "mlflow.default_experiment_provider"


def test_mlflow_run_on_this_project_is_named_after_its_model(tmp_path):
    assert project_model_name([MLFLOW, "run", str(REPO), "-e", "train", "--env-manager", "local"]) == "news-classifier"
    assert (
        project_model_name([MLFLOW, "run", str(REPO), "-e", "evaluate", "-P", "version=2", "-P", "model_name=topics"])
        == "topics"
    )
    main_py = str(Path(sys.executable).parent.parent / "lib" / "mlflow" / "__main__.py")
    assert project_model_name([main_py, "run", f"file://{REPO}", "-e", "train"]) == "news-classifier"


def test_other_commands_and_projects_are_left_to_mlflow(tmp_path):
    (tmp_path / "MLproject").write_text("name: someone-else\nentry_points: {main: {command: 'true'}}\n")
    assert project_model_name([MLFLOW, "run", str(tmp_path), "-e", "main"]) is None
    assert project_model_name([MLFLOW, "ui", "--port", "5000"]) is None
    assert project_model_name(["python", "run", str(REPO)]) is None
    assert project_model_name([MLFLOW, "run", str(tmp_path / "missing")]) is None


def test_the_user_names_the_experiment(monkeypatch):
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    assert experiment_name("topics") == "topics"
    assert experiment_name("topics", "my-experiment") == "my-experiment"
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "from-env")
    assert experiment_name("topics") == "from-env"


def _provider_registered(env: dict, tmp_path: Path) -> dict:
    """Make sure `mlflow run` finds the provider pyproject.toml declares: an editable install
    has it; a checkout on PYTHONPATH gets the same entry point from a tiny dist-info folder."""
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"][GROUP]
    if any(ep.value == declared["quantgate"] for ep in entry_points(group=GROUP)):
        return env
    dist = tmp_path / "site" / "quantgate_provider-0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: quantgate-provider\nVersion: 0\n")
    (dist / "entry_points.txt").write_text(f"[{GROUP}]\n" + "".join(f"{k} = {v}\n" for k, v in declared.items()))
    return {**env, "PYTHONPATH": os.pathsep.join([str(dist.parent), str(REPO), env.get("PYTHONPATH", "")])}


def test_a_fresh_main_leaves_all_its_runs_in_one_experiment_named_after_the_model(tmp_path):
    """`mlflow run . -e main` as the README says, with no experiment given, on an empty store."""
    thresholds = tmp_path / "keyholder" / "lenient.yaml"  # with a key: outside the store's folder
    thresholds.parent.mkdir()
    thresholds.write_text(yaml.safe_dump(LENIENT))
    (tmp_path / "store").mkdir()
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env = _provider_registered({**env, "MLFLOW_TRACKING_URI": uri, "HF_HUB_OFFLINE": "1"}, tmp_path)
    env["QUANTGATE_EVIDENCE_KEY"] = "e" * 40  # with a key, main attests its own FP32 version and signs all
    env.pop("QUANTGATE_EVIDENCE_KEY_FILE", None)
    # its own process group: on a timeout the steps `mlflow run` started are stopped with it
    proc = subprocess.Popen(
        [
            MLFLOW,
            "run",
            str(REPO),
            "-e",
            "main",
            "--env-manager",
            "local",
            "-P",
            "model_name=exp-check",
            "-P",
            "max_epochs=1",
            "-P",
            "train_limit=48",
            "-P",
            "latency_runs=5",
            "-P",
            f"thresholds={thresholds}",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=2400)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
    assert "fp32 = exp-check v1" in out, out[-3000:] + err[-3000:]
    assert "[attest] v1, registered by this run's train step, attested" in out and "gate PASSED" in out, out[-3000:]
    client = MlflowClient(tracking_uri=uri)
    experiments = client.search_experiments()
    runs = client.search_runs([e.experiment_id for e in experiments])
    steps = sorted(r.data.tags["mlflow.project.entryPoint"] for r in runs if "mlflow.project.entryPoint" in r.data.tags)
    assert steps == ["evaluate", "evaluate", "main", "promote", "quantise_onnx", "train"], steps
    assert "onnx-int8-dynamic" in {r.info.run_name for r in runs}  # the variant's own run, nested in quantise_onnx
    used = {client.get_experiment(r.info.experiment_id).name for r in runs}
    assert used == {"exp-check"}, used
    models = client.search_logged_models([e.experiment_id for e in experiments])
    assert {m.experiment_id for m in models} == {runs[0].info.experiment_id}
