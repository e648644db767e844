"""The serving loader of the toy ``onnx-copy`` runtime. It is copied into every logged model of
that runtime (the model's code), so it imports nothing from quantgate or the tests."""

from __future__ import annotations

import json

import numpy as np


def load(path: str, labels: list[str]):
    """Check the file's own label order against the label map; return ``infer``."""
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    own = json.loads(session.get_modelmeta().custom_metadata_map.get("quantgate.labels", "null"))
    if own != list(labels):
        raise ValueError(f"label order mismatch: label_map.json says {labels}, the ONNX file says {own}")
    names = [i.name for i in session.get_inputs()]

    def infer(encoded: dict[str, np.ndarray]) -> np.ndarray:
        return session.run(None, {n: encoded[n].astype(np.int64) for n in names})[0]

    return infer
