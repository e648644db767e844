"""Shared fixtures: a real sqlite-backed MLflow store per test session, and a tiny trained model."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import mlflow
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests must never reach a hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent  # the repository root, for tests in any subfolder
TEST_MODEL = "news-test"
LENIENT = {"min_macro_f1": 0.0, "max_latency_p95_ms": 5000.0}


def resign(model_dir: Path, key: str, file: Path) -> None:
    """Re-sign one artifact of a local model copy: its manifest entry in meta.json is
    recomputed, so only checks other than the SHA-256 one can catch what was changed."""
    from quantgate.packaging import manifest

    meta_path = next(Path(model_dir).glob("artifacts/meta.json"))
    meta = json.loads(meta_path.read_text())
    meta["manifest"][key] = manifest({key: str(file)})[key]
    meta_path.write_text(json.dumps(meta))


def swap_labels(model_dir: Path, i: int = 0, j: int = 1) -> tuple[Path, list[str]]:
    """Swap labels ``i`` and ``j`` in a local model copy's label_map.json and re-sign it.
    Returns the label map's path and the swapped order."""
    from quantgate.labels import load_label_map

    label_map = next(Path(model_dir).glob("artifacts/label_map.json"))
    swapped = load_label_map(label_map)
    swapped[i], swapped[j] = swapped[j], swapped[i]
    label_map.write_text(json.dumps({str(k): name for k, name in enumerate(swapped)}))
    resign(model_dir, "label_map", label_map)
    return label_map, swapped


@pytest.fixture(scope="session", autouse=True)
def block_memory(tmp_path_factory) -> Path:
    """This session's memory of replaced description blocks (quantgate.block_memory), never the
    user's own: a test must neither read nor leave seals in ~/.local/state."""
    folder = tmp_path_factory.mktemp("state")
    old = os.environ.get("QUANTGATE_STATE_DIR")
    os.environ["QUANTGATE_STATE_DIR"] = str(folder)
    yield folder
    if old is None:
        os.environ.pop("QUANTGATE_STATE_DIR", None)
    else:
        os.environ["QUANTGATE_STATE_DIR"] = old


@pytest.fixture(scope="session")
def store(tmp_path_factory) -> Path:
    """A fresh sqlite tracking + registry store; artifacts land beside it."""
    root = tmp_path_factory.mktemp("store")
    old_cwd, old_uri = os.getcwd(), os.environ.get("MLFLOW_TRACKING_URI")
    os.chdir(root)  # the default artifact root ./mlruns lands here, not in the repo
    uri = f"sqlite:///{root / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("quantgate-tests")
    yield root
    os.chdir(old_cwd)
    if old_uri is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = old_uri


@pytest.fixture(scope="session")
def pipeline(store):
    """train (a few steps on a slice) -> quantise_onnx -> evaluate both, in-process."""
    from flows.evaluate import evaluate
    from flows.quantise import quantise_one as quantise
    from flows.train import TrainConfig, train
    from quantgate.recipes import OnnxInt8DynamicRecipe as DynamicInt8Recipe

    cfg = TrainConfig(max_epochs=1, train_limit=96, batch_size=16, max_length=32)
    with mlflow.start_run(run_name="test-train"):
        fp32 = train(cfg, TEST_MODEL)
    with mlflow.start_run(run_name="test-quantise"):
        int8 = quantise(fp32, DynamicInt8Recipe())
    metrics = {}
    for mv in (fp32, int8):
        with mlflow.start_run(run_name=f"test-evaluate-{mv.version}"):
            metrics[mv.version] = evaluate(mv, latency_runs=20)
    client = mlflow.MlflowClient()
    return {
        "fp32": client.get_model_version(TEST_MODEL, fp32.version),
        "int8": client.get_model_version(TEST_MODEL, int8.version),
        "metrics": metrics,
    }


@pytest.fixture(scope="session")
def staged(pipeline, tmp_path_factory):
    """The INT8 version promoted to @staging through the real gate CLI (lenient thresholds)."""
    import yaml
    from click.testing import CliRunner

    from flows import promote

    path = tmp_path_factory.mktemp("thresholds") / "lenient.yaml"
    path.write_text(yaml.safe_dump(LENIENT))
    result = CliRunner().invoke(
        promote.cli, ["--version", pipeline["int8"].version, "--model-name", TEST_MODEL, "--thresholds", str(path)]
    )
    return result


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
