"""The ONNX graph helpers every ONNX-based backend shares: export from the torch parent, ONNX
Runtime's transformer fusions, FP16 conversion, label stamping, the calibration slice and its
reader, the graph's input names and the external-data files it names. Files in, files out:
nothing here touches MLflow."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np

from quantgate.contract import ONNX_LABELS_KEY

OPSET = 17


def export_onnx(model, tokenizer, out: Path, opset: int = OPSET) -> Path:
    """Trace the torch model to ONNX with dynamic batch and sequence axes."""
    import inspect

    import torch

    from quantgate.architectures import model_inputs

    enc = tokenizer(["an example headline for tracing"], return_tensors="pt")
    names = model_inputs(inspect.signature(model.forward).parameters, enc)
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes["logits"] = {0: "batch"}
    with torch.no_grad():
        torch.onnx.export(
            model,
            tuple(enc[n] for n in names),
            str(out),
            input_names=names,
            output_names=["logits"],
            dynamic_axes=axes,
            opset_version=opset,
            dynamo=False,
        )
    return out


def fuse(path: Path, out: Path, num_heads: int, hidden_size: int, model_type: str = "bert") -> Path:
    """ONNX Runtime's transformer fusions (for ``bert``: Attention, SkipLayerNorm, BiasGelu,
    EmbedLayerNorm), with the optimiser's ``model_type`` for the architecture."""
    from onnxruntime.transformers.optimizer import optimize_model

    optimized = optimize_model(str(path), model_type=model_type, num_heads=num_heads, hidden_size=hidden_size)
    optimized.save_model_to_file(str(out))
    return out


def float_default():
    import onnx

    # the fused graph's contrib ops carry no type info for the quantiser
    return {"DefaultTensorType": onnx.TensorProto.FLOAT}


def convert_fp16(path: Path, out: Path, recipe) -> Path:
    """FP16 with ORT's transformer converter; kept-FP32 ops stay FP32, and big FP32 weights
    that only they read are stored as FP16 with a Cast back (same numbers, half the bytes)."""
    import onnx
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = OnnxModel(onnx.load(str(path)))
    model.convert_float_to_float16(
        keep_io_types=recipe.keep_io_types, op_block_list=[*DEFAULT_OP_BLOCK_LIST, *recipe.keep_fp32_ops]
    )
    store_big_fp32_weights_as_fp16(model.model, recipe.fp16_storage_min_elements)
    model.save_model_to_file(str(out))
    return out


def store_big_fp32_weights_as_fp16(model, min_elements: int) -> list[str]:
    """Replace each FP32 initializer of at least ``min_elements`` values with an FP16 copy
    and a Cast to FP32 in front of its readers. ORT folds the Cast at session start."""
    from onnx import TensorProto, helper, numpy_helper

    changed = []
    for init in list(model.graph.initializer):
        if init.data_type != TensorProto.FLOAT or int(np.prod(init.dims)) < min_elements:
            continue
        half = numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), init.name + "_fp16")
        model.graph.initializer.remove(init)
        model.graph.initializer.append(half)
        model.graph.node.insert(
            0, helper.make_node("Cast", [half.name], [init.name], name=init.name + "_to_fp32", to=TensorProto.FLOAT)
        )
        changed.append(init.name)
    return changed


def stamp_labels(path: Path, labels: list[str]) -> None:
    """Write the label order into the ONNX file itself; the pyfunc checks it at load."""
    import onnx

    model = onnx.load(str(path))
    kept = [p for p in model.metadata_props if p.key != ONNX_LABELS_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    model.metadata_props.add(key=ONNX_LABELS_KEY, value=json.dumps(labels))
    onnx.save(model, str(path))


def calibration_data(recipe, splits: tuple[str, ...] = ("train",)):
    """The recipe's calibration dataset (its columns and labels as the recipe records them)."""
    from quantgate.data import load_dataset
    from quantgate.recipes.base import calibration_kwargs

    return load_dataset(recipe.calibration_dataset, splits, **calibration_kwargs(recipe))


def calibration_texts(recipe) -> list[str]:
    """A seeded random slice of the calibration dataset's train split."""
    texts = list(calibration_data(recipe)["train"].texts)
    random.Random(recipe.calibration_seed).shuffle(texts)
    return texts[: recipe.calibration_size]


def calibration_reader(texts: list[str], tokenizer, input_names: list[str], max_length: int, pad: bool):
    """Feeds one headline per call, inputs named as the graph names them. The histogram
    calibrators (Percentile, Entropy) stack every batch, so they get fixed-length padding."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._texts = iter(texts)

        def get_next(self):
            text = next(self._texts, None)
            if text is None:
                return None
            enc = tokenizer(
                [text],
                truncation=True,
                max_length=max_length,
                padding="max_length" if pad else False,
                return_tensors="np",
            )
            return {n: enc[n].astype(np.int64) for n in input_names}

    return Reader()


def input_names(path: Path) -> list[str]:
    """The graph's input names, in its order (never bind by position)."""
    import onnx

    return [i.name for i in onnx.load(str(path), load_external_data=False).graph.input]


def encoded_items(texts: list[str], tokenizer, input_names: list[str], max_length: int) -> list[dict[str, np.ndarray]]:
    """One batch-1 feed per text, keyed by the model's own input names (never by position)."""
    items = []
    for text in texts:
        enc = tokenizer([text], truncation=True, max_length=max_length, return_tensors="np")
        items.append({name: enc[name].astype(np.int64) for name in input_names})
    return items


def _tensors(graph):
    """Every tensor of a graph, its subgraphs' (If, Loop, Scan) included."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield from (sparse.values, sparse.indices)
    yield from _node_tensors(graph.node)


def _node_tensors(nodes):
    for node in nodes:
        for attr in node.attribute:
            yield from ([attr.t] if attr.HasField("t") else [])
            yield from attr.tensors
            for sparse in [attr.sparse_tensor] if attr.HasField("sparse_tensor") else []:
                yield from (sparse.values, sparse.indices)
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from _tensors(sub)


def external_data_files(path: str | Path) -> list[Path]:
    """The files beside an ONNX model that hold its external-data tensors (those that exist;
    ONNX Runtime refuses a location outside the model's folder)."""
    import itertools

    import onnx

    path = Path(path)
    model = onnx.load(str(path), load_external_data=False)
    tensors = itertools.chain(_tensors(model.graph), _node_tensors(n for f in model.functions for n in f.node))
    locations = {
        entry.value
        for tensor in tensors
        if tensor.data_location == onnx.TensorProto.EXTERNAL
        for entry in tensor.external_data
        if entry.key == "location"
    }
    files = {(path.parent / location).resolve() for location in locations}
    return sorted(f for f in files if f.is_file() and f != path.resolve())
