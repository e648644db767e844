"""What a person compares versions by: logged models named after their variant with their own
recipe's params, evaluation figures on the run the UI's comparison reads, short headline tags,
and `quantgate compare`'s UI link and Pareto plot."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from evaluators.plots import pareto_front, pareto_png
from evaluators.report import headline_tags
from flows import compare
from quantgate.tracking import logged_model_id

from conftest import TEST_MODEL


def test_pareto_front_keeps_only_points_nothing_beats():
    # (latency, F1): a is fastest; b is slower and better; c is beaten by b; d is slowest and best
    points = [(1.0, 0.80), (2.0, 0.90), (2.5, 0.85), (4.0, 0.95), (1.0, 0.70)]
    assert pareto_front(points) == [0, 1, 3]
    assert pareto_front([]) == []
    assert pareto_front([(3.0, 0.5)]) == [0]


def test_headline_tags_are_short_and_skip_what_was_not_measured():
    tags = headline_tags(
        {"macro_f1": 0.912345, "latency_p95_ms": 3.4567, "size_mb": 23.04, "speedup_vs_parent": 2.953, "accuracy": 0.9}
    )
    assert tags == {"macro_f1": "0.9123", "p95_ms": "3.46", "size_mb": "23.0", "speedup": "2.95x"}
    assert headline_tags({"macro_f1": 0.5, "speedup_vs_parent": float("nan")}) == {"macro_f1": "0.5000"}


def test_compare_url_names_the_model_and_each_versions_run():
    url = compare.compare_url("http://127.0.0.1:5000", "news-classifier", {"1": "aaa", "4": "bbb"})
    base, fragment = url.split("#", 1)
    assert base == "http://127.0.0.1:5000/"
    route, query = fragment.split("?", 1)
    assert route == "/compare-model-versions"
    q = {k: unquote(v[0]) for k, v in parse_qs(query, keep_blank_values=True).items()}
    assert json.loads(q["name"]) == "news-classifier" and json.loads(q["runs"]) == {"1": "aaa", "4": "bbb"}
    assert compare.ui_base_url("http://tracking:5000/", None) == "http://tracking:5000"
    assert compare.ui_base_url("sqlite:///mlflow.db", None) == compare.LOCAL_UI
    assert compare.ui_base_url("sqlite:///mlflow.db", "https://ui.example/") == "https://ui.example"
    assert urlsplit(url).scheme == "http"


def test_pareto_plot_draws_frontier_and_speedup_intervals(tmp_path):
    rows = [
        {"label": "v1 fp32", "latency_p50_ms": 7.0, "macro_f1": 0.91, "size_mb": 90.0},
        {
            "label": "v2 int8",
            "latency_p50_ms": 1.4,
            "macro_f1": 0.92,
            "size_mb": 23.0,
            "speedup_vs_parent": 5.0,
            "speedup_ci_low": 4.6,
            "speedup_ci_high": 5.3,
            "speedup_ci_level": 0.95,
        },
    ]
    out = pareto_png(rows, tmp_path / "pareto.png")
    assert out.stat().st_size > 10_000


def test_logged_models_are_named_after_their_variant_with_only_their_recipe(pipeline):
    client = MlflowClient()
    fp32 = client.get_logged_model(logged_model_id(pipeline["fp32"]))
    int8 = client.get_logged_model(logged_model_id(pipeline["int8"]))
    assert (fp32.name, int8.name) == ("fp32", "onnx-int8-dynamic")
    assert int8.params["precision"] == "int8" and int8.params["weight_type"]
    assert not [k for k in int8.params if "." in k]  # no other recipe's `variant.field` params
    assert "lora_r" in fp32.params and "weight_type" not in fp32.params
    assert {m.key for m in int8.metrics} >= {"macro_f1", "latency_p95_ms", "size_mb"}


def test_the_source_run_the_ui_compares_carries_the_evaluation(pipeline):
    client = MlflowClient()
    for mv in (pipeline["fp32"], pipeline["int8"]):
        mv = client.get_model_version(TEST_MODEL, mv.version)
        # the version's latest evaluation (other tests in the session may have evaluated it again)
        evaluated = client.get_run(mv.tags["eval_run_id"]).data.metrics
        source = client.get_run(mv.run_id).data
        for key in ("macro_f1", "latency_p95_ms", "size_mb"):
            assert source.metrics[key] == pytest.approx(evaluated[key]), key
        assert source.tags["quantgate.eval_run_id"] == mv.tags["eval_run_id"]
        assert mv.tags["macro_f1"] == f"{evaluated['macro_f1']:.4f}" and mv.tags["size_mb"]
    int8 = client.get_model_version(TEST_MODEL, pipeline["int8"].version)
    assert int8.tags["speedup"].endswith("x") and client.get_run(int8.run_id).info.run_name == "onnx-int8-dynamic"


def test_compare_prints_the_ui_link_for_the_versions_it_lists(pipeline, tmp_path):
    result = CliRunner().invoke(
        compare.cli, ["--name", TEST_MODEL, "--out", str(tmp_path / "p.png"), "--ui-url", "http://127.0.0.1:5999"]
    )
    assert result.exit_code == 0, result.output
    line = next(out for out in result.output.splitlines() if "/#/compare-model-versions" in out)
    runs = json.loads(unquote(line.split("runs=", 1)[1]))
    assert runs[str(pipeline["fp32"].version)] == pipeline["fp32"].run_id
    assert runs[str(pipeline["int8"].version)] == pipeline["int8"].run_id
    assert (tmp_path / "p.png").stat().st_size > 10_000


def test_a_model_name_with_an_apostrophe_works_or_is_one_line(store, monkeypatch):
    """The tenth adversarial run: MLflow accepts the name `o'brien`, but `compare` and `promote
    --candidates` built `name='o'brien'` filters and ended in MLflow's traceback."""
    import mlflow
    from click.testing import CliRunner

    from flows.cli import cli

    from promote_helpers import log_trivial_model

    mlflow.register_model(log_trivial_model("apostrophe")[0], "o'brien")
    shown = CliRunner().invoke(cli, ["compare", "--name", "o'brien"])
    assert shown.exit_code == 0 and "Traceback" not in shown.output, shown.output
    for chosen in ("MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID"):  # so promote would pick "o'brien"
        monkeypatch.delenv(chosen, raising=False)
    gated = CliRunner().invoke(cli, ["promote", "--candidates", "--model-name", "o'brien", "--dry-run"])
    assert gated.exit_code == 2 and "has no non-fp32 versions" in gated.output, gated.output
    assert mlflow.get_experiment_by_name("o'brien") is None  # promote logged no run, so created no experiment
    both = CliRunner().invoke(cli, ["compare", "--name", "a'b\"c"])
    assert both.exit_code == 2 and "holds both ' and" in both.output, both.output


def test_compare_replaces_a_link_at_out_and_never_uploads_what_it_points_at(pipeline, tmp_path):
    """The nineteenth adversarial run planted `pareto.png` as a link: to the evidence key file
    (overwritten with the plot), and, swapped in after the plot was saved, to the key file or
    /proc/self/environ (uploaded into the store as the compare run's artifact)."""
    secret = tmp_path / "evidence.key"
    secret.write_text("s" * 64)
    out = tmp_path / "pareto.png"
    out.symlink_to(secret)
    result = CliRunner().invoke(compare.cli, ["--name", TEST_MODEL, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert secret.read_text() == "s" * 64
    assert not out.is_symlink() and out.read_bytes().startswith(b"\x89PNG")
    client = MlflowClient()
    run = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], "tags.`quantgate.step` = 'compare'",
        order_by=["attributes.start_time DESC"], max_results=1,
    )[0]  # fmt: skip
    logged = Path(client.download_artifacts(run.info.run_id, "pareto.png", str(tmp_path / "dl")))
    assert logged.read_bytes() == out.read_bytes()
