"""quantise_onnx and quantise_torch on the tiny trained model of the `pipeline` fixture: every
recipe registers a loadable, tagged version; a second run reuses it; TorchScript loads without
pickle; a permuted label map refuses to load."""

from __future__ import annotations

import json
import pickle
import shutil
import tempfile
import zipfile
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from flows import quantise_onnx
from flows.quantise import quantise
from quantgate.data import news9_labels
from quantgate.packaging import QUANT_CONFIG_FILE
from quantgate.recipes import ONNX_VARIANTS, build_recipe, recipe_from_json

from conftest import TEST_MODEL, swap_labels

LABELS = news9_labels()  # the test models are trained on news9

TEXTS = ["Striker signs for Lisbon club", "Ransomware hits city council", "Central bank holds rates"]
# Small calibration slice: the tiny model is about plumbing, the news9 figures are in the report.
OVERRIDES = {"onnx-int8-static": {"calibration_size": 16}}


def _recipes(variants):
    return [build_recipe(v, "auto", **OVERRIDES.get(v, {})) for v in variants]


@pytest.fixture(scope="module")
def variants(pipeline):
    """All five variants of the pipeline's FP32 version (onnx-int8-dynamic may be reused)."""
    fp32 = pipeline["fp32"]
    with mlflow.start_run(run_name="test-quantise-onnx-all") as run:
        built = quantise(fp32, _recipes(ONNX_VARIANTS), step="quantise_onnx")
    with mlflow.start_run(run_name="test-quantise-torch"):
        built.update(quantise(fp32, [build_recipe("torch-int8-dynamic", "auto")], step="quantise_torch"))
    client = MlflowClient()
    return {
        "fp32": fp32,
        "run_tags": client.get_run(run.info.run_id).data.tags,
        "versions": {v: client.get_model_version(TEST_MODEL, mv.version) for v, mv in built.items()},
    }


def test_the_parent_is_an_fp32_torch_version(pipeline):
    # first, so --durations shows the shared pipeline fixture apart from the quantising below
    assert (pipeline["fp32"].tags["variant"], pipeline["fp32"].tags["runtime"]) == ("fp32", "torch")


def _load(mv):
    return mlflow.pyfunc.load_model(f"models:/{TEST_MODEL}/{mv.version}")


def test_each_recipe_registers_a_tagged_version_of_the_same_parent(variants):
    versions = variants["versions"]
    assert set(versions) == {*ONNX_VARIANTS, "torch-int8-dynamic"}
    expected = {
        "onnx-fp32": ("fp32", "onnxruntime"),
        "onnx-int8-dynamic": ("int8", "onnxruntime"),
        "onnx-int8-static": ("int8", "onnxruntime"),
        "onnx-fp16": ("fp16", "onnxruntime"),
        "torch-int8-dynamic": ("int8", "torchscript"),
    }
    for variant, mv in versions.items():
        tags = mv.tags
        assert tags["variant"] == variant
        assert (tags["precision"], tags["runtime"]) == expected[variant]
        assert tags["device"] == "cpu" and tags["parent_version"] == str(variants["fp32"].version)
        assert len(tags["manifest_sha256"]) == 64 and len(tags["recipe_sha256"]) == 64
        assert json.loads(tags["recipe"])["variant"] == variant
    for variant in ONNX_VARIANTS:  # how `main` finds what a quantise run handed on
        assert variants["run_tags"][f"quantgate.version.{variant}"] == str(versions[variant].version)


def test_the_resolved_recipe_travels_inside_the_artifact(variants):
    for variant, mv in variants["versions"].items():
        model = _load(mv).unwrap_python_model()
        config = json.loads(open(model.artifact_paths["quant_config"], encoding="utf-8").read())
        assert config == json.loads(mv.tags["recipe"])
        assert recipe_from_json(json.dumps(config)).variant == variant
        assert "quant_config" in model.meta["manifest"]  # covered by the SHA-256 manifest


def test_every_variant_predicts_and_the_fp_variants_match_their_parent(variants):
    parent = _load(variants["fp32"]).unwrap_python_model()
    p_parent = parent.predict_proba(TEXTS)
    for variant, mv in variants["versions"].items():
        model = _load(mv)
        out = model.predict(pd.DataFrame({"text": TEXTS}))
        assert set(out["label"]) <= set(LABELS), variant
        probs = model.unwrap_python_model().predict_proba(TEXTS)
        assert probs.shape == p_parent.shape and np.allclose(probs.sum(axis=1), 1.0), variant
        tolerance = {"onnx-fp32": 1e-4, "onnx-fp16": 1e-2}.get(variant, 0.2)
        assert np.abs(probs - p_parent).max() < tolerance, variant


def test_a_second_run_with_the_same_inputs_reuses_the_versions(variants):
    client = MlflowClient()
    before = len(client.search_model_versions(f"name='{TEST_MODEL}'"))
    with mlflow.start_run(run_name="test-quantise-again"):
        again = quantise(variants["fp32"], _recipes(ONNX_VARIANTS), step="quantise_onnx")
        again.update(quantise(variants["fp32"], [build_recipe("torch-int8-dynamic", "auto")], step="quantise_torch"))
    assert {v: mv.version for v, mv in again.items()} == {v: mv.version for v, mv in variants["versions"].items()}
    assert len(client.search_model_versions(f"name='{TEST_MODEL}'")) == before


def test_a_build_and_its_parity_check_leave_no_files_behind(variants, tmp_path, monkeypatch):
    """The parent's checked copy and the copy a parity check loads are removed once used (they
    were never removed: the thirty-seventh adversarial run counted 61 parent copies, about 88 MB
    each, on its host)."""
    from flows.quantise import ParityCheck
    from registry_hooks.gate.thresholds import DEFAULT_THRESHOLDS, load_thresholds

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    check = ParityCheck(variants["fp32"], 8, load_thresholds(DEFAULT_THRESHOLDS).base)
    with mlflow.start_run(run_name="test-quantise-leaves-nothing"):
        built = quantise(variants["fp32"], [build_recipe("onnx-fp32", "auto", fuse_graph=False)], check=check)
    assert built["onnx-fp32"].version != variants["versions"]["onnx-fp32"].version  # built, not reused
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_the_cli_reuses_and_refuses_a_bad_override(variants):
    fp32 = variants["fp32"]
    result = CliRunner().invoke(
        quantise_onnx.cli, ["--source", fp32.version, "--model-name", TEST_MODEL, "--recipe", "onnx-fp32"]
    )
    assert result.exit_code == 0, result.output
    assert f"reusing {TEST_MODEL} version {variants['versions']['onnx-fp32'].version}" in result.output
    bad = CliRunner().invoke(
        quantise_onnx.cli,
        [
            "--source",
            fp32.version,
            "--model-name",
            TEST_MODEL,
            "--recipe",
            "onnx-int8-static",
            "--set",
            "onnx-int8-static.calibration_size=3",
        ],
    )
    assert bad.exit_code == 2 and "calibration_size" in bad.output


def test_torchscript_variant_loads_without_pickle(variants, monkeypatch):
    mv = variants["versions"]["torch-int8-dynamic"]

    def refuse(*args, **kwargs):
        raise AssertionError("pickle/torch.load used while loading the TorchScript variant")

    for target, name in ((pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"), (torch, "load")):
        monkeypatch.setattr(target, name, refuse)
    model = _load(mv)
    assert list(model.predict(pd.DataFrame({"text": TEXTS}))["label"])
    path = model.unwrap_python_model().artifact_paths["model"]
    with zipfile.ZipFile(path) as archive:  # a TorchScript archive: code plus extra files
        names = archive.namelist()
    assert any("/code/" in n for n in names)
    assert any(n.endswith("extra/quantgate_labels.json") for n in names)


def _with_swapped_labels(mv, tmp_path):
    """A local copy whose label_map.json has two labels swapped, manifest re-signed, so only
    the label-order check is left to catch it."""
    src = mlflow.artifacts.download_artifacts(f"models:/{TEST_MODEL}/{mv.version}")
    path = tmp_path / mv.tags["variant"]
    shutil.copytree(src, path)
    swap_labels(path)
    return path


@pytest.mark.parametrize("variant", ["torch-int8-dynamic", "onnx-int8-static", "onnx-fp16"])
def test_a_permuted_label_map_refuses_to_load(variants, tmp_path, variant):
    path = _with_swapped_labels(variants["versions"][variant], tmp_path)
    with pytest.raises(MlflowException, match="label order mismatch"):
        mlflow.pyfunc.load_model(str(path))


def test_the_quant_config_is_tamper_evident(variants, tmp_path):
    mv = variants["versions"]["onnx-int8-static"]
    path = tmp_path / "copy"
    shutil.copytree(mlflow.artifacts.download_artifacts(f"models:/{TEST_MODEL}/{mv.version}"), path)
    config = next(path.glob(f"artifacts/{QUANT_CONFIG_FILE}"))
    config.write_text(config.read_text().replace('"calibration_size": 16', '"calibration_size": 17'))
    with pytest.raises(MlflowException, match="SHA-256 manifest"):
        mlflow.pyfunc.load_model(str(path))


def test_with_an_evidence_key_only_variants_that_are_no_program_are_run(variants, tmp_path):
    """The twentieth adversarial run: a TorchScript file is a program. One whose forward read the
    key file with `torch.from_file` put the key into the predictions table of the key holder's
    evaluation; another made a passed model's answers depend on a file outside its digest. With
    a key, `evaluate` and `serve` (`untrusted_code`) refuse TorchScript and accept the others."""
    from quantgate.model_files import untrusted_code

    for variant, mv in variants["versions"].items():
        local = mlflow.artifacts.download_artifacts(
            f"models:/{TEST_MODEL}/{mv.version}", dst_path=str(tmp_path / variant)
        )
        problem = untrusted_code(Path(local))
        if variant == "torch-int8-dynamic":
            assert problem and "TorchScript program" in problem, problem
        else:
            assert problem is None, (variant, problem)


# ------------------------------------------------------------------ the twenty-first adversarial run
def _reregistered(mv, tmp_path: Path, name: str):
    """A store writer's own registered model: the FP32 parent logged again as its version 1.
    Returns (that version, the downloaded parent's artifacts folder)."""
    from quantgate import packaging

    local = Path(mlflow.artifacts.download_artifacts(f"models:/{TEST_MODEL}/{mv.version}", dst_path=str(tmp_path)))
    arts = local / "artifacts"
    meta = json.loads((arts / "meta.json").read_text())
    with mlflow.start_run(run_name=f"adv21-{name}-parent"):
        parent = packaging.log_variant(
            model_path=arts / "model", tokenizer_dir=arts / "tokenizer", runtime="torch", variant="fp32",
            precision="fp32", registered_model_name=name, labels=LABELS, max_length=meta["max_length"],
        )  # fmt: skip
    return parent, meta


def test_weights_a_shard_index_names_outside_the_model_are_refused(variants, tmp_path):
    """Twenty-first adversarial run, C2. A "variant" whose folder held only config.json and a
    model.safetensors.index.json naming an absolute shard path in a file the writer could rewrite:
    transformers joined the path to the folder, so the absolute one won. The key holder evaluated,
    gated and served it (size 0.013 MB for a 91 MB model), and the writer then changed its answers
    with no digest changing. Now evaluate refuses it, and so do serve, score and the gate, which
    ask the same check of the downloaded files."""
    from safetensors import safe_open

    from quantgate import packaging
    from quantgate.model_files import digest_problem

    name = f"{TEST_MODEL}-adv21-shard"
    parent, meta = _reregistered(variants["fp32"], tmp_path / "src", name)
    src = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{parent.version}", dst_path=str(tmp_path / "p")))
    shard = tmp_path / "elsewhere" / "model-00001-of-00001.safetensors"  # the writer's own file
    shard.parent.mkdir()
    shutil.copy(src / "artifacts" / "model" / "model.safetensors", shard)
    with safe_open(str(shard), "pt") as fh:
        keys = list(fh.keys())
    folder = tmp_path / "attack" / "model"
    folder.mkdir(parents=True)
    shutil.copy(src / "artifacts" / "model" / "config.json", folder / "config.json")
    index = {"metadata": {"total_size": shard.stat().st_size}, "weight_map": {k: str(shard) for k in keys}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with mlflow.start_run(run_name="adv21-shard"):
        mv = packaging.log_variant(
            model_path=folder, tokenizer_dir=src / "artifacts" / "tokenizer", runtime="torch", variant="torch-lite",
            precision="int8", registered_model_name=name, labels=LABELS, parent_version=parent.version,
            max_length=meta["max_length"], quant_config={"note": "lite"}, packages=["torch", "transformers"],
        )  # fmt: skip

    from flows.cli import cli

    result = CliRunner().invoke(cli, ["evaluate", "--model-name", name, "--version", mv.version, "--latency-runs", "5"])
    assert result.exit_code != 0 and "Traceback" not in result.output, result.output
    assert "not a file of its own folder" in result.output, result.output
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{mv.version}", dst_path=str(tmp_path / "v")))
    problem = digest_problem(local, dict(MlflowClient().get_model_version(name, mv.version).tags))
    assert problem and "loads weights from" in problem, problem  # what serve, score and the gate ask too


def test_onnx_weights_moved_into_a_sidecar_file_count_towards_the_size(variants, tmp_path, monkeypatch):
    """Twenty-first adversarial run, C3. A 91 MB onnx-fp32 variant the gate rejected on
    max_size_mb passed at 0.02 MB once its weights were saved as ONNX external data in a second
    artifact beside the graph: ONNX Runtime reads it from the graph's folder, but the size was
    taken from the `model` artifact alone. Now the evaluator and the gate count every
    external-data file the graph names."""
    import onnx
    import yaml

    from flows.evaluate import evaluate
    from quantgate import packaging

    name = f"{TEST_MODEL}-adv21-sidecar"
    parent, meta = _reregistered(variants["fp32"], tmp_path / "src", name)
    genuine = variants["versions"]["onnx-fp32"]
    src = Path(mlflow.artifacts.download_artifacts(f"models:/{TEST_MODEL}/{genuine.version}", dst_path=str(tmp_path)))
    graph_file = next((src / "artifacts").glob("*.onnx"))
    out = tmp_path / "out"
    out.mkdir()
    onnx.save_model(
        onnx.load(str(graph_file)), str(out / graph_file.name), save_as_external_data=True,
        all_tensors_to_one_file=True, location=graph_file.name + ".data", size_threshold=0,
    )  # fmt: skip
    sidecar = out / (graph_file.name + ".data")
    real_bytes = graph_file.stat().st_size
    assert (out / graph_file.name).stat().st_size < real_bytes / 20 < sidecar.stat().st_size  # the weights moved
    write = packaging._write_artifacts  # the writer's own logging code: one more artifact, the sidecar
    monkeypatch.setattr(packaging, "_write_artifacts", lambda *a, **k: {**write(*a, **k), "weights": str(sidecar)})
    with mlflow.start_run(run_name="adv21-sidecar"):
        mv = packaging.log_variant(
            model_path=out / graph_file.name, tokenizer_dir=src / "artifacts" / "tokenizer", runtime="onnxruntime",
            variant="onnx-fp32", precision="fp32", registered_model_name=name, labels=LABELS,
            parent_version=parent.version, max_length=meta["max_length"],
            quant_config=json.loads((src / "artifacts" / QUANT_CONFIG_FILE).read_text()), packages=["onnxruntime"],
        )  # fmt: skip
    monkeypatch.undo()
    with mlflow.start_run(run_name="adv21-sidecar-evaluate"):
        metrics = evaluate(MlflowClient().get_model_version(name, mv.version), latency_runs=5)
    assert metrics["size_mb"] >= real_bytes / 1e6, metrics["size_mb"]
    limit = tmp_path / "size.yaml"
    limit.write_text(yaml.safe_dump({"max_size_mb": round(real_bytes / 2e6, 4)}))
    from flows.cli import cli

    gate = ["promote", "--model-name", name, "--version", mv.version, "--thresholds", str(limit)]
    result = CliRunner().invoke(cli, gate)
    assert result.exit_code == 1 and "FAIL: size_mb" in result.output, result.output
    assert MlflowClient().get_model_version(name, mv.version).current_stage == "None"
