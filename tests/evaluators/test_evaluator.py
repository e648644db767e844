"""The `quantgate` MLflow evaluator plugin and the maths under it."""

from __future__ import annotations

import shutil

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from evaluators.metrics import block_bootstrap_speedup, flip_matrix, mean_kl_divergence
from evaluators.plugin import EvaluatorConfig
from evaluators.report import CARD_END, model_card
from quantgate.data import load_dataset
from quantgate.tracking import logged_model_id

from conftest import TEST_MODEL, resign, swap_labels

FAST = {"latency_runs": 10, "warmup": 2, "speedup_blocks": 2, "sample_headlines": 2}


# ----------------------------------------------------------------- maths, hand-computed
def test_kl_divergence_hand_computed():
    p = np.array([[0.5, 0.5], [1.0, 0.0]])
    q = np.array([[0.25, 0.75], [1.0, 0.0]])
    expected = (0.5 * np.log(0.5 / 0.25) + 0.5 * np.log(0.5 / 0.75) + 0.0) / 2
    assert mean_kl_divergence(p, q) == pytest.approx(expected)
    assert mean_kl_divergence(p, p) == pytest.approx(0.0, abs=1e-12)


def test_flip_matrix_counts_parent_to_variant_moves():
    m = flip_matrix([0, 0, 1, 2], [0, 1, 1, 0], 3)
    assert m.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 0]]
    assert m.sum() - np.trace(m) == 2


def test_block_bootstrap_speedup_point_and_interval():
    base = [[0.010, 0.011, 0.009], [0.010, 0.012, 0.010]]
    cand = [[0.005, 0.005, 0.004], [0.005, 0.006, 0.005]]
    point, low, high = block_bootstrap_speedup(base, cand, level=0.9, resamples=500, seed=1)
    assert point == pytest.approx(np.median(np.concatenate(base)) / np.median(np.concatenate(cand)))
    assert low <= point <= high
    assert (point, low, high) == block_bootstrap_speedup(base, cand, level=0.9, resamples=500, seed=1)


@pytest.mark.parametrize(
    "base,cand,level",
    [([[0.1]], [[0.1]], 0.95), ([[0.1], [0.1]], [[0.1], [0.0]], 0.95), ([[0.1], [0.1]], [[0.1], [0.1]], 1.0)],
)
def test_block_bootstrap_speedup_refuses_bad_input(base, cand, level):
    with pytest.raises(ValueError):
        block_bootstrap_speedup(base, cand, level=level)


def test_evaluator_config_validation():
    with pytest.raises(MlflowException, match=r"unknown quantgate evaluator config key\(s\) \['latency'\]"):
        EvaluatorConfig.from_dict({"latency": 3})
    with pytest.raises(MlflowException, match="out of range"):
        EvaluatorConfig.from_dict({"ci_level": 1.5})


def test_model_card_replaces_itself_and_keeps_gate_history():
    from quantgate.description import put_card

    card1 = model_card("m", "2", {"variant": "x"}, {"macro_f1": 0.9}, {})
    described, own = put_card("", card1, own=None)
    described += "\n\n### Gate passed for `@staging`\n- ok"  # a note from before notes went into the block
    card2 = model_card("m", "2", {"variant": "x"}, {"macro_f1": 0.8}, {})
    updated, _ = put_card(described, card2, own=own)
    assert updated.count(CARD_END) == 1 and "0.8" in updated and "| 0.9 |" not in updated
    assert updated.endswith("### Gate passed for `@staging`\n- ok")


# ----------------------------------------------------------------- the plugin, on a tiny model
@pytest.fixture(scope="module")
def test_frame():
    return load_dataset("news9", ("train", "test"))["test"].frame[["text", "label"]].iloc[::10].reset_index(drop=True)


def _evaluate(model_uri, frame, parent_uri, model_id=None):
    return mlflow.models.evaluate(
        model_uri,
        frame,
        targets="label",
        model_type="classifier",
        evaluators=["quantgate"],
        evaluator_config={"quantgate": {**FAST, "parent_model_uri": parent_uri}},
        model_id=model_id,
    )


def test_plugin_runs_from_plain_mlflow_evaluate(pipeline, test_frame):
    fp32, int8 = pipeline["fp32"], pipeline["int8"]
    with mlflow.start_run(run_name="plugin-test") as run:
        result = _evaluate(
            f"models:/{TEST_MODEL}/{int8.version}",
            test_frame,
            f"models:/{TEST_MODEL}/{fp32.version}",
            model_id=logged_model_id(int8),
        )
    m = result.metrics
    for key in (
        "macro_f1",
        "accuracy",
        "f1.Sci_Tech",
        "size_mb",
        "parameters",
        "latency_p50_ms",
        "latency_p99_ms",
        "tokenise_p50_ms",
        "throughput_b32_per_s",
        "top1_agreement",
        "mean_kl_divergence",
        "label_flips",
        "speedup_vs_parent",
        "speedup_ci_low",
        "speedup_ci_high",
    ):
        assert key in m and np.isfinite(m[key]), key
    assert m["speedup_ci_low"] <= m["speedup_vs_parent"] <= m["speedup_ci_high"]
    assert {"confusion_matrix", "confidence_bars", "label_flips", "disagreements"} <= set(result.artifacts)
    client = MlflowClient()
    names = {a.path for a in client.list_artifacts(run.info.run_id, "quantgate")}
    assert "quantgate/confusion_matrix.png" in names and "quantgate/confidence_bars.png" in names
    table = MlflowClient().load_table(run.info.experiment_id, "eval_predictions.json", run_ids=[run.info.run_id])
    assert len(table) == len(test_frame) and {"label_id", "pred_id", "parent_pred_id"} <= set(table.columns)
    # MLflow attaches the evaluator's metrics to the version's logged model (the UI's per-model view)
    logged = client.get_logged_model(logged_model_id(int8))
    assert {mt.key for mt in logged.metrics} >= {"macro_f1", "latency_p95_ms"}


def test_two_evaluations_agree_exactly_on_accuracy_and_parity(pipeline, test_frame):
    fp32, int8 = pipeline["fp32"], pipeline["int8"]
    runs = []
    for _ in range(2):
        with mlflow.start_run(run_name="repeat"):
            runs.append(
                _evaluate(
                    f"models:/{TEST_MODEL}/{int8.version}", test_frame, f"models:/{TEST_MODEL}/{fp32.version}"
                ).metrics
            )
    for key in ("macro_f1", "accuracy", "top1_agreement", "max_abs_prob_delta", "label_flips"):
        assert runs[0][key] == runs[1][key], key


def test_contract_mismatch_with_the_parent_fails_the_evaluation(pipeline, test_frame, tmp_path):
    """A variant that is self-consistent (it loads) but tokenises differently from its parent."""
    src = mlflow.artifacts.download_artifacts(f"models:/{TEST_MODEL}/{pipeline['int8'].version}")
    path = shutil.copytree(src, tmp_path / "model")
    tok_dir = next(path.glob("artifacts/tokenizer"))
    cfg = tok_dir / "tokenizer_config.json"
    cfg.write_text(cfg.read_text().replace('"do_lower_case": true', '"do_lower_case": false'))
    resign(path, "tokenizer", tok_dir)
    mlflow.pyfunc.load_model(str(path))  # it loads: only the contract check can catch it
    with mlflow.start_run(run_name="contract"):
        with pytest.raises(MlflowException, match="contract violated: tokenizer files differ"):
            _evaluate(str(path), test_frame, f"models:/{TEST_MODEL}/{pipeline['fp32'].version}")


def test_swapped_label_map_consistent_with_its_own_model_is_caught_against_the_parent(pipeline, test_frame, tmp_path):
    """Labels permuted in both label_map.json and the ONNX metadata: the variant loads and
    would serve, but its label order disagrees with the parent's - a failed evaluation."""
    from quantgate.onnx_graph import stamp_labels

    src = mlflow.artifacts.download_artifacts(f"models:/{TEST_MODEL}/{pipeline['int8'].version}")
    path = shutil.copytree(src, tmp_path / "model")
    _, swapped = swap_labels(path, 4, 7)
    onnx_file = next(path.glob("artifacts/*.onnx"))
    stamp_labels(onnx_file, swapped)
    resign(path, "model", onnx_file)
    mlflow.pyfunc.load_model(str(path))
    with mlflow.start_run(run_name="contract-labels"):
        with pytest.raises(MlflowException, match="contract violated: label map .* differs from the parent's"):
            _evaluate(str(path), test_frame, f"models:/{TEST_MODEL}/{pipeline['fp32'].version}")
