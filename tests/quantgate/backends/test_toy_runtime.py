"""Adding a runtime touches one backend module and its loader: a toy runtime that copies the
FP32 ONNX export (toy_runtime/ beside this file) is built, registered, checked and served by quantgate's
own quantise step and pyfunc, with nothing else changed."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import requests
from mlflow import MlflowClient

from flows.quantise import ParityCheck, quantise, recipes_for
from quantgate.backends import runtimes
from quantgate.tracking import version_uri
from registry_hooks.gate.thresholds import Thresholds

from conftest import TEST_MODEL, free_port

TOY = Path(__file__).parent / "toy_runtime"


@pytest.fixture(scope="module")
def toy_backend():
    """Importing the toy backend module registers the onnx-copy backend and its recipe."""
    sys.path.insert(0, str(TOY))
    return importlib.import_module("toy_backend")


def _serve_without_the_tests(model_uri: str, tmp_path: Path, port: int):
    """`mlflow models serve` of ``model_uri`` from a process that cannot import the tests (no
    PYTHONPATH, run from ``tmp_path``): the loader must travel in the model. Returns (process, log)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    log = open(tmp_path / "serve.log", "wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "models",
            "serve",
            "-m",
            model_uri,
            "--env-manager",
            "local",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return proc, log


def _post_once_up(proc, port: int, texts: list[str], log_path: Path):
    """The server's answer to ``texts``, posted again every half second until it listens (two
    minutes at most); None if it never did. Fails at once if the server process exits."""
    answer = None
    for _ in range(240):
        try:
            answer = requests.post(
                f"http://127.0.0.1:{port}/invocations",
                json={"dataframe_records": [{"text": t} for t in texts]},
                timeout=5,
            )
            break
        except requests.ConnectionError:
            assert proc.poll() is None, log_path.read_text()[-3000:]
            subprocess.run(["sleep", "0.5"])
    return answer


def test_a_toy_runtime_is_built_registered_checked_and_served(toy_backend, pipeline, store, tmp_path):
    assert "onnx-copy" in runtimes() and toy_backend.BACKEND.loader.name == "toy_loader.py"
    fp32 = pipeline["fp32"]
    recipes = recipes_for("onnx-copy", "all", "auto", {})
    check = ParityCheck(fp32, 40, Thresholds(min_top1_agreement=0.99, max_macro_f1_drop_points=1.0))
    with mlflow.start_run(run_name="toy") as run:
        built = quantise(fp32, recipes, step="quantise_toy", check=check)
    mv = built["onnx-copy-fp32"]
    assert mv.tags["runtime"] == "onnx-copy" and mv.tags["parent_version"] == str(fp32.version)
    metrics = MlflowClient().get_run(run.info.run_id).data.metrics
    assert metrics["onnx-copy-fp32.check_agreement"] == 1.0  # the same graph as its parent
    assert metrics["onnx-copy-fp32.check_within_gate_limits"] == 1.0

    # the loader travels in the model: served from a process that cannot import the tests
    local = Path(mlflow.artifacts.download_artifacts(version_uri(mv), dst_path=str(tmp_path / "model")))
    assert (local / "code" / "toy_loader.py").is_file()
    assert json.loads((local / "artifacts" / "meta.json").read_text())["loader"] == "toy_loader"
    port = free_port()
    proc, log = _serve_without_the_tests(version_uri(mv), tmp_path, port)
    try:
        texts = ["Central bank holds rates as inflation cools", "Striker signs four-year deal"]
        parent = mlflow.pyfunc.load_model(version_uri(fp32)).predict(pd.DataFrame({"text": texts}))
        answer = _post_once_up(proc, port, texts, tmp_path / "serve.log")
        assert answer is not None and answer.status_code == 200, (tmp_path / "serve.log").read_text()[-3000:]
        served = answer.json()["predictions"]
        assert [row["label"] for row in served] == list(parent["label"])
        assert np.allclose([row["probability"] for row in served], parent["probability"], atol=1e-4)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
    assert MlflowClient().get_model_version(TEST_MODEL, mv.version).tags["variant"] == "onnx-copy-fp32"
