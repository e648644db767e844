"""Where `quantgate score` writes: checked before work starts, published in one step, no partial output."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flows.errors import UserError
from quantgate.score_io import infer_format, merge_parts, plan_output, publish, remove_stale_partials, split_s3


def test_formats_come_from_the_extension_or_default_to_parquet():
    assert infer_format("in/*.csv", None) == "csv" and infer_format("x.parquet", None) == "parquet"
    assert infer_format("s3://b/in/", None) == "parquet" and infer_format("x.csv", "parquet") == "parquet"


def test_s3_uris_must_name_a_bucket_and_an_output_must_name_an_object(tmp_path):
    assert split_s3("s3://bucket/a/b.parquet") == ("bucket", "a/b.parquet")
    with pytest.raises(UserError, match="names no bucket"):
        split_s3("s3:///key")
    with pytest.raises(UserError, match="an s3:// output is one object"):
        plan_output("s3://bucket/folder/", None, False, tmp_path)


def test_an_existing_output_or_a_missing_folder_is_refused_before_any_work(tmp_path):
    (tmp_path / "done.parquet").mkdir()
    with pytest.raises(UserError, match="already exists; pass --overwrite"):
        plan_output(str(tmp_path / "done.parquet"), None, False, tmp_path)
    with pytest.raises(UserError, match="does not exist"):
        plan_output(str(tmp_path / "nope" / "x.parquet"), None, False, tmp_path)


def test_output_is_staged_in_a_hidden_sibling_and_appears_in_one_rename(tmp_path):
    plan = plan_output(str(tmp_path / "scores.parquet"), None, False, tmp_path / "scratch")
    assert plan.staging.parent == tmp_path and plan.staging.name.startswith(".scores.parquet.partial-")
    plan.staging.mkdir()
    (plan.staging / "part-00000.parquet").write_text("x")
    (plan.staging / "_SUCCESS").write_text("")  # as Spark leaves a finished write
    assert not (tmp_path / "scores.parquet").exists()  # nothing under the output's name until published
    publish(plan, ["row"], overwrite=False)
    assert (tmp_path / "scores.parquet" / "part-00000.parquet").exists() and not plan.staging.exists()
    # --overwrite replaces the old output whole
    again = plan_output(str(tmp_path / "scores.parquet"), None, True, tmp_path / "scratch")
    again.staging.mkdir()
    (again.staging / "part-00000.parquet").write_text("y")
    publish(again, ["row"], overwrite=True)
    assert (tmp_path / "scores.parquet" / "part-00000.parquet").read_text() == "y"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_partials_of_dead_runs_are_removed_and_a_live_runs_are_kept(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".out.parquet.partial-{dead.pid}-0123abcd"
    live = tmp_path / f".out.parquet.partial-{os.getpid()}-89abcdef"
    other = tmp_path / f".other.parquet.partial-{dead.pid}-0123abcd"
    for d in (stale, live, other):
        d.mkdir()
    assert remove_stale_partials(tmp_path / "out.parquet") == [stale]
    assert live.exists() and other.exists() and not stale.exists()


def test_parts_merge_into_one_file_in_order(tmp_path):
    parts = tmp_path / "parts"
    parts.mkdir()
    for i in range(3):
        pq.write_table(pa.table({"row": [2 * i, 2 * i + 1]}), parts / f"part-0000{i}-x.snappy.parquet")
    merge_parts(parts, "parquet", tmp_path / "one.parquet", ["row"])
    assert pd.read_parquet(tmp_path / "one.parquet")["row"].tolist() == list(range(6))
    csv_parts = tmp_path / "csv"
    csv_parts.mkdir()
    (csv_parts / "part-00000-x.csv").write_text("0,a\n1,b\n")
    (csv_parts / "part-00001-x.csv").write_text('2,"c, d"\n')
    merge_parts(csv_parts, "csv", tmp_path / "one.csv", ["row", "label"])
    assert pd.read_csv(tmp_path / "one.csv").to_dict("list") == {"row": [0, 1, 2], "label": ["a", "b", "c, d"]}


def _model_dir(tmp_path):
    import json

    import yaml

    from quantgate.packaging import manifest, manifest_digest

    root = tmp_path / "model"
    (root / "artifacts").mkdir(parents=True)
    (root / "artifacts" / "model.onnx").write_bytes(b"weights")
    (root / "artifacts" / "label_map.json").write_text('{"0": "World"}')
    arts = {"model": "artifacts/model.onnx", "label_map": "artifacts/label_map.json", "meta": "artifacts/meta.json"}
    man = manifest({k: str(root / v) for k, v in arts.items() if k != "meta"})
    (root / "artifacts" / "meta.json").write_text(json.dumps({"manifest": man}))
    (root / "MLmodel").write_text(
        yaml.safe_dump({"flavors": {"python_function": {"artifacts": {k: {"path": v} for k, v in arts.items()}}}})
    )
    return root, manifest_digest(man)


def test_score_refuses_files_that_differ_from_the_versions_manifest_tag(tmp_path):
    from types import SimpleNamespace

    from flows.score import ModelRefused, verify_model_files

    root, digest = _model_dir(tmp_path)
    mv = SimpleNamespace(name="m", version="3", tags={"manifest_sha256": digest})
    assert verify_model_files(root, mv) == digest
    (root / "artifacts" / "model.onnx").write_bytes(b"weightz")
    with pytest.raises(ModelRefused, match=r"refusing version 3 of 'm'.*changed: model/model.onnx"):
        verify_model_files(root, mv)
    with pytest.raises(ModelRefused, match="no manifest_sha256 tag"):
        verify_model_files(root, SimpleNamespace(name="m", version="3", tags={}))


def test_hadoop_outputs_are_refused_with_what_works(tmp_path):
    with pytest.raises(UserError, match="not hdfs://"):
        plan_output("hdfs:///scores/x.parquet", None, False, tmp_path)
    assert plan_output(f"file://{tmp_path}/x.parquet", None, False, tmp_path).target == str(tmp_path / "x.parquet")


@pytest.mark.parametrize("missing", ["{root}/nope.parquet", "{root}/*.parquet", "file://{root}/nope.csv"])
def test_a_local_input_that_matches_nothing_is_one_line(tmp_path, missing):
    """The eleventh run: `score --input /nonexistent/*.parquet` ended in Spark's AnalysisException."""
    from quantgate.errors import UserError
    from quantgate.score_io import download_inputs

    with pytest.raises(UserError, match="no such file"):
        download_inputs([missing.format(root=tmp_path)], tmp_path)
    present = tmp_path / "there.parquet"
    present.write_bytes(b"")
    assert download_inputs([str(present), f"{tmp_path}/*.parquet", "hdfs://nn/x"], tmp_path)[0] == str(present)


def _earlier_output(folder):
    """An output as score leaves it: Spark's files, published with score's record of them."""
    plan = plan_output(str(folder), "parquet", False, folder.parent / "scratch")
    plan.staging.mkdir()
    (plan.staging / "part-00000-0a1b.snappy.parquet").write_text("x")
    (plan.staging / "_SUCCESS").write_text("")
    publish(plan, ["row"], overwrite=False)
    return folder


def test_overwrite_replaces_only_an_earlier_score_output(tmp_path, monkeypatch):
    """The twelfth and thirteenth runs: `score --overwrite` deleted a person's folder of notes,
    their own Spark-written dataset, files they added to an earlier output (named `part-…`, or a
    folder), and with `--output .` the whole working folder, input included."""
    theirs = tmp_path / "archive.parquet"  # a person's own Spark dataset: Spark's names, not score's
    theirs.mkdir()
    (theirs / "part-00000-hand-labelled.parquet").write_text("mine")
    (theirs / "_SUCCESS").write_text("")
    with pytest.raises(UserError, match="has no readable _QUANTGATE_SCORE.json"):
        plan_output(str(theirs), "parquet", True, tmp_path / "scratch")
    earlier = _earlier_output(tmp_path / "scores.parquet")
    assert plan_output(str(earlier), "parquet", True, tmp_path / "scratch")  # exactly as score wrote it
    (earlier / "part-2-review.md").write_text("mine")
    with pytest.raises(UserError, match=r"holds files score did not write there \(part-2-review.md\)"):
        plan_output(str(earlier), "parquet", True, tmp_path / "scratch")
    (tmp_path / "thesis.parquet").write_text("a file")
    with pytest.raises(UserError, match="is a file"):
        plan_output(str(tmp_path / "thesis.parquet"), None, True, tmp_path / "scratch")
    monkeypatch.chdir(earlier)
    for target in (".", str(tmp_path)):
        with pytest.raises(UserError, match="working folder"):
            plan_output(target, "parquet", True, tmp_path / "scratch")
    assert (earlier / "part-2-review.md").read_text() == "mine" and (tmp_path / "thesis.parquet").exists()


def test_files_added_to_the_old_output_while_the_job_ran_are_kept(tmp_path):
    earlier = _earlier_output(tmp_path / "scores.parquet")
    plan = plan_output(str(earlier), "parquet", True, tmp_path / "scratch")  # the check before the job
    plan.staging.mkdir()
    (plan.staging / "part-00000-new.snappy.parquet").write_text("y")
    (earlier / "notes.md").write_text("added while it ran")
    with pytest.raises(UserError, match="since the job started"):
        publish(plan, ["row"], overwrite=True)
    assert (earlier / "notes.md").read_text() == "added while it ran"


@pytest.mark.parametrize("where", ["scores.parquet", "out/scores.parquet"])
def test_an_output_through_a_link_planted_in_the_working_folder_is_refused(tmp_path, monkeypatch, where):
    # the forty-sixth adversarial run: a dangling `scores.parquet` link in the store's folder (the
    # key holder's working folder) sent the output, and an --overwrite, wherever it pointed
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    if where == "scores.parquet":
        (work / "scores.parquet").symlink_to(elsewhere / "planted")  # dangling: nothing there yet
    else:
        (work / "out").symlink_to(elsewhere)
    for target in (where, str(work / where)):
        with pytest.raises(UserError, match="is a symbolic link, and score writes through none"):
            plan_output(target, None, True, tmp_path / "scratch")
    assert not list(elsewhere.iterdir())


def test_with_a_key_a_local_output_only_goes_where_no_store_writer_can_write(tmp_path, monkeypatch):
    # the forty-seventh adversarial run swapped score's staging folder, in the store's folder,
    # for a link while Spark ran
    from flows.score import keyed_output_check

    store, private = tmp_path / "store", tmp_path / "private"
    store.mkdir()
    private.mkdir(mode=0o700)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store / 'mlflow.db'}")
    monkeypatch.setenv("QUANTGATE_EVIDENCE_KEY", "k" * 40)
    with pytest.raises(
        UserError, match="only in a folder no store writer can write, and .* the tracking store's folder"
    ):
        keyed_output_check(plan_output(str(store / "scores.parquet"), None, False, tmp_path / "s1"))
    keyed_output_check(plan_output(str(private / "scores.parquet"), None, False, tmp_path / "s2"))
    monkeypatch.delenv("QUANTGATE_EVIDENCE_KEY")  # without a key the store's writers are trusted
    keyed_output_check(plan_output(str(store / "scores.parquet"), None, False, tmp_path / "s3"))
