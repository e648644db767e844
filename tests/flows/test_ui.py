"""The MLflow UI as a person sees it, rendered by headless Chromium against `mlflow server`
on the test store: the experiment's logged models carry their variant names, a version page
shows its variant and headline figures, and the registry's comparison of two versions shows
the evaluation's metrics side by side."""

from __future__ import annotations

import mlflow
import pytest
from mlflow import MlflowClient

from flows.compare import compare_url

from conftest import TEST_MODEL
from ui_pages import find_chromium, missing, mlflow_ui, rendered_text, row_starts, values_after

BROWSER = find_chromium()
pytestmark = pytest.mark.skipif(
    BROWSER is None,
    reason="headless Chromium not found (Debian: apt-get install chromium); the UI check needs a browser",
)


@pytest.fixture(scope="module")
def ui(pipeline):
    with mlflow_ui(mlflow.get_tracking_uri()) as base:
        yield base


def test_logged_models_list_names_every_variant(ui, pipeline):
    int8 = pipeline["int8"]
    experiment = MlflowClient().get_run(int8.run_id).info.experiment_id
    expected = ["fp32", "onnx-int8-dynamic"]
    text = rendered_text(BROWSER, f"{ui}/#/experiments/{experiment}/models", wait_for=("Ready",))
    # the Model name cell, followed by the Status cell (the Source run cell names runs, not models)
    unnamed = [name for name in expected if not row_starts(text, name, "Ready")]
    assert not unnamed, text[:3000]


def test_version_page_shows_variant_and_headline_figures(ui, pipeline):
    int8 = MlflowClient().get_model_version(TEST_MODEL, pipeline["int8"].version)
    expected = ["onnx-int8-dynamic", "macro_f1", int8.tags["macro_f1"], "p95_ms", int8.tags["p95_ms"], "size_mb"]
    text = rendered_text(BROWSER, f"{ui}/#/models/{TEST_MODEL}/versions/{int8.version}", wait_for=tuple(expected))
    assert not missing(text, expected), text[:3000]


def test_comparing_two_versions_shows_the_evaluation_metrics(ui, pipeline):
    fp32, int8 = pipeline["fp32"], pipeline["int8"]
    client = MlflowClient()
    # each version's latest evaluation: other tests in the session may have evaluated it again
    metrics = {
        mv.version: client.get_run(client.get_model_version(TEST_MODEL, mv.version).tags["eval_run_id"]).data.metrics
        for mv in (fp32, int8)
    }
    url = compare_url(ui, TEST_MODEL, {fp32.version: fp32.run_id, int8.version: int8.run_id})
    figures = ["macro_f1", "latency_p95_ms", "size_mb"]
    expected = ["Comparing 2 Versions", "onnx-int8-dynamic", *figures]
    text = rendered_text(BROWSER, url, wait_for=tuple(expected))
    assert not missing(text, expected), text[:4000]
    for key in figures:  # one cell per version, in the order of the URL, rounded by the UI
        shown = values_after(text, key, 2)
        want = [metrics[fp32.version][key], metrics[int8.version][key]]
        assert shown == [pytest.approx(w, rel=2e-3, abs=1e-3) for w in want], (key, shown, want)
