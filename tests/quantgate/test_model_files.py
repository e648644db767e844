"""What a model folder may name, and what its size counts (quantgate/model_files.py), on real
files: the twenty-first adversarial run loaded weights from a path a shard index named outside
the model, and hid an ONNX graph's weights in an external-data file the size did not count."""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from quantgate.model_files import model_bytes, outside_references


def _folder(tmp_path, files: dict[str, object]):
    folder = tmp_path / "model"
    folder.mkdir()
    for name, content in files.items():
        (folder / name).write_text(content if isinstance(content, str) else json.dumps(content))
    return folder


def test_a_model_folder_that_names_only_its_own_files_passes(tmp_path):
    folder = _folder(
        tmp_path,
        {
            "config.json": {},
            "model-00001-of-00002.safetensors": "x",
            "model-00002-of-00002.safetensors": "y",
            "model.safetensors.index.json": {
                "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}
            },
            "tokenizer_config.json": {"tokenizer_file": None, "vocab_file": "vocab.txt", "model_max_length": 512},
        },
    )
    assert outside_references(folder) is None
    assert outside_references(tmp_path / "not-there") is None  # a file artifact has no folder to check


@pytest.mark.parametrize("shard", ["/etc/hostname", "../elsewhere.safetensors", "sub/x.safetensors", "missing", ".."])
def test_a_shard_index_naming_anything_but_its_own_file_is_refused(tmp_path, shard):
    folder = _folder(tmp_path, {"config.json": {}, "model.safetensors.index.json": {"weight_map": {"w": shard}}})
    problem = outside_references(folder)
    assert problem and "model.safetensors.index.json loads weights from" in problem, problem


def test_a_shard_reached_through_a_link_is_refused(tmp_path):
    outside = tmp_path / "outside.safetensors"
    outside.write_text("weights")
    folder = _folder(tmp_path, {"pytorch_model.bin.index.json": {"weight_map": {"w": "linked.bin"}}})
    os.symlink(outside, folder / "linked.bin")
    assert "loads weights from 'linked.bin'" in (outside_references(folder) or "")


@pytest.mark.parametrize(
    "fields",
    [{"tokenizer_file": "/tmp/tokenizer.json"}, {"vocab_file": "../vocab.txt"}, {"merges_files": ["ok.txt", "/x"]}],
)
def test_a_tokenizer_config_naming_a_file_elsewhere_is_refused(tmp_path, fields):
    problem = outside_references(_folder(tmp_path, {"tokenizer_config.json": fields}))
    assert problem and "outside its own folder" in problem, problem


@pytest.mark.parametrize("bad", ["[1, 2]", '{"weight_map": {"w": ["a"]}}', "not json"])
def test_an_unreadable_index_is_refused_not_a_crash(tmp_path, bad):
    folder = _folder(tmp_path, {"model.safetensors.index.json": bad})
    assert "cannot be read" in (outside_references(folder) or "")


def test_a_peft_adapter_folder_is_refused(tmp_path):
    folder = _folder(tmp_path, {"adapter_config.json": {"base_model_name_or_path": "/somewhere/else"}})
    assert "adapter_config.json" in (outside_references(folder) or "")


def _graph(tmp_path, external: bool):
    """A real ONNX graph with one 64 KB initializer, inside an If's branch when ``external``."""
    weight = numpy_helper.from_array(np.arange(16384, dtype=np.float32), "w")
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [16384])
    branch = helper.make_graph([helper.make_node("Identity", ["w"], ["y"])], "branch", [], [out], [weight])
    cond = helper.make_tensor_value_info("c", TensorProto.BOOL, [])
    node = helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=branch)
    model = helper.make_model(helper.make_graph([node], "g", [cond], [out]))
    tmp_path.mkdir()
    path = tmp_path / "model.onnx"
    onnx.save_model(model, str(path), save_as_external_data=external, location="model.onnx.data", size_threshold=0)
    return path


def test_the_size_of_an_onnx_graph_counts_its_external_data(tmp_path):
    inline = model_bytes(_graph(tmp_path / "inline", external=False))
    path = _graph(tmp_path / "external", external=True)
    assert path.stat().st_size < 16384 < (path.parent / "model.onnx.data").stat().st_size
    assert model_bytes(path) >= 4 * 16384 and abs(model_bytes(path) - inline) < 1024
    (path.parent / "model.onnx.data").unlink()  # a missing file is no size (ONNX Runtime will not load it)
    assert model_bytes(path) == path.stat().st_size


def test_the_size_of_a_file_that_is_no_onnx_graph_is_its_own(tmp_path):
    bogus = tmp_path / "model.onnx"
    bogus.write_bytes(b"\x00not a protobuf" * 10)
    assert model_bytes(bogus) == bogus.stat().st_size
