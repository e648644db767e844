"""The pyfunc every quantgate variant is served through ("models from code": no cloudpickle).

MLflow copies this file into each logged model and runs it at load time, so it imports
nothing from quantgate itself: a served model needs only its own artifacts. The one
exception is a TensorRT engine (runtime ``tensorrt``): its device-memory code lives in
``quantgate.trt_runtime``, so serving one needs ``quantgate[gpu]`` installed.

Artifacts (the keys given to ``mlflow.pyfunc.log_model(artifacts=...)``):

* ``model``     - the weights: a Hugging Face model folder (safetensors), an ``.onnx`` file, or a
  TorchScript ``.pt`` archive (runtime ``torchscript``, loaded with ``torch.jit.load``);
* ``tokenizer`` - the tokenizer folder it was trained with;
* ``label_map`` - ``{"0": "World", ...}``: logit i means label i;
* ``meta``      - ``meta.json``: runtime, max_length, variant, and the SHA-256 manifest of
  every file above. Load refuses a file whose digest differs, and a model whose own label
  order (HF config or ONNX metadata) differs from the label map - never mislabel silently.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

# Literal copies of quantgate.contract names (this file imports nothing from quantgate).
ONNX_LABELS_KEY = "quantgate.labels"
OPENVINO_LABELS_KEY = ("quantgate", "labels")  # rt_info path of the label order in an OpenVINO IR
# Inference threads: QUANTGATE_THREADS (0 or unset: the runtime decides) and, for ONNX Runtime,
# QUANTGATE_SPINNING (1/0: whether idle intra-op threads spin; off suits a loaded machine).
THREADS_ENV, SPINNING_ENV = "QUANTGATE_THREADS", "QUANTGATE_SPINNING"
# Extra files inside a TorchScript archive: the label order and the traced input names.
TORCHSCRIPT_LABELS_FILE = "quantgate_labels.json"
TORCHSCRIPT_INPUTS_FILE = "quantgate_inputs.json"
TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")  # a traced graph's inputs, in order
# predict() is hinted with pd.DataFrame: MLflow then neither nags about type hints nor converts
# the input itself; the pyfunc validates its input and the signature is declared at log time.


# runtime (meta.json) -> the loader method: it checks the file's own label order against the
# label map and sets ``self._infer``. A runtime not listed here names its loader module in meta.json.
LOADERS = {
    "torch": "_load_torch",
    "onnxruntime": "_load_onnx",
    "torchscript": "_load_torchscript",
    "openvino": "_load_openvino",
    "tensorrt": "_load_tensorrt",
}
DEFAULT_TOP_K = 3
CHARS_PER_TOKEN_CAP = 16  # texts are cut to max_length * this many characters before tokenising


class InputError(MlflowException):
    """Bad input: `mlflow models serve` answers 400 with this message and nothing else.

    The scoring server rewrites ``e.message`` to prepend the whole request
    ("Failed to predict data '<payload>'"), echoing user data back - a megabyte of it for a
    1 MB text. The message is fixed at construction, so that rewrite is ignored.
    """

    def __init__(self, message: str):
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)
        self._fixed_message = message

    @property
    def message(self) -> str:
        return getattr(self, "_fixed_message", "")

    @message.setter
    def message(self, value: str) -> None:
        pass  # keep the message as written (see the class docstring)


def _bad_input(message: str) -> InputError:
    return InputError(message)


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def files_of(root: str | Path) -> list[Path]:
    root = Path(root)
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]


def verify_manifest(artifacts: dict[str, str], manifest: dict[str, dict[str, str]]) -> None:
    """Every artifact's files must match the digests recorded when the variant was built."""
    for key, expected in manifest.items():
        root = Path(artifacts[key])
        actual = {(p.relative_to(root).as_posix() if root.is_dir() else p.name): sha256_file(p) for p in files_of(root)}
        if actual != expected:
            changed = sorted(set(actual.items()) ^ set(expected.items()))
            names = sorted({name for name, _ in changed})
            raise MlflowException(
                f"refusing to load: artifact {key!r} does not match its recorded SHA-256 manifest "
                f"(differs: {names}). The model files changed after registration; re-register it."
            )


def thread_setting() -> int:
    """Intra-op threads from ``QUANTGATE_THREADS`` (0: the runtime decides)."""
    raw = os.environ.get(THREADS_ENV, "").strip() or "0"
    if not raw.isdigit():
        raise MlflowException(f"{THREADS_ENV} must be a whole number of threads, got {raw!r}")
    return int(raw)


def read_label_map(path: str | Path) -> list[str]:
    """A saved label map's labels in id order; refuses gaps, non-integer ids or duplicates.
    The one reader of ``label_map.json`` (``quantgate.labels.load_label_map`` is this)."""
    raw = json.loads(Path(path).read_text(encoding="utf-8"))  # malformed: a ValueError too
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise ValueError(f"{path}: a label map is a JSON object of label names by id")
    try:
        ids = sorted(int(k) for k in raw)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: label map keys must be integer ids, got {list(raw)!r}") from exc
    if ids != list(range(len(ids))):
        raise ValueError(f"{path}: label ids must be 0..{len(ids) - 1} without gaps, got {ids}")
    labels = [raw[str(i)] for i in ids]
    if len(set(labels)) != len(labels):
        raise ValueError(f"{path}: duplicate label names in {labels}")
    return labels


class NewsClassifier(mlflow.pyfunc.PythonModel):
    """Text in, label and probability out, for every runtime in LOADERS and any plugin runtime."""

    def load_context(self, context):
        arts = context.artifacts
        self.artifact_paths = dict(arts)
        self.meta = json.loads(Path(arts["meta"]).read_text(encoding="utf-8"))
        verify_manifest(arts, self.meta["manifest"])
        self.labels = read_label_map(arts["label_map"])
        self.max_length = int(self.meta.get("max_length", 128))
        self.max_batch = int(os.environ.get("QUANTGATE_MAX_BATCH") or self.meta.get("max_batch", 256))
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(arts["tokenizer"])
        # A fast (Rust) tokenizer is not safe to call from two threads at once: it raises
        # "RuntimeError: Already borrowed". MLflow's scoring server runs predict() on a thread
        # pool, so every tokenizer call holds this lock (tokenising costs ~0.3 ms a headline).
        self._tokenizer_lock = threading.Lock()
        runtime = self.meta["runtime"]
        if runtime in LOADERS:
            getattr(self, LOADERS[runtime])(arts["model"])
        elif self.meta.get("loader"):
            self._load_plugin(self.meta["loader"], arts["model"])
        else:
            raise MlflowException(f"unknown runtime {runtime!r} in meta.json, and no loader named")

    # ------------------------------------------------------------------ backends
    def _load_plugin(self, module: str, path: str) -> None:
        """A plugin runtime's loader: a module logged with the model (its code_paths) whose
        ``load(path, labels)`` checks the file's own label order and returns ``infer``."""
        import importlib

        try:
            loader = importlib.import_module(module)
        except ImportError as exc:
            raise MlflowException(f"the {self.meta['runtime']!r} loader {module!r} is not in the model: {exc}") from exc
        self._infer = loader.load(path, list(self.labels))

    def _load_torch(self, path: str) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification

        self._torch = torch
        self.model = AutoModelForSequenceClassification.from_pretrained(path).eval()
        own = [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]
        self._check_labels(own, "the model's config.json id2label")
        self._infer = self._infer_torch

    def _load_onnx(self, path: str) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = thread_setting()  # 0: ONNX Runtime decides
        spinning = os.environ.get(SPINNING_ENV, "").strip()
        if spinning in ("0", "1"):
            options.add_session_config_entry("session.intra_op.allow_spinning", spinning)
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        raw = self.session.get_modelmeta().custom_metadata_map.get(ONNX_LABELS_KEY)
        if raw is None:
            raise MlflowException(f"ONNX model has no {ONNX_LABELS_KEY!r} metadata: label order unknown")
        self._check_labels(json.loads(raw), "the ONNX model's metadata")
        width = self.session.get_outputs()[0].shape[-1]
        if isinstance(width, int) and width != len(self.labels):
            raise MlflowException(f"ONNX model outputs {width} logits for {len(self.labels)} labels")
        # Bind inputs by name with the dtype the graph declares (never by position).
        dtypes = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}
        self._onnx_inputs = {i.name: dtypes[i.type] for i in self.session.get_inputs()}
        self._infer = self._infer_onnx

    def _load_openvino(self, path: str) -> None:
        """An OpenVINO IR folder (model.xml + model.bin) compiled for the CPU. The label order
        travels in the IR's rt_info; inputs are bound by name with the dtype the model declares.
        Each serving thread gets its own infer request (one request must not run twice at once)."""
        import openvino as ov

        core = ov.Core()
        model = core.read_model(str(Path(path) / "model.xml"))
        if not model.has_rt_info(list(OPENVINO_LABELS_KEY)):
            raise MlflowException(f"OpenVINO model has no rt_info {'/'.join(OPENVINO_LABELS_KEY)}: label order unknown")
        self._check_labels(
            json.loads(model.get_rt_info(list(OPENVINO_LABELS_KEY)).astype(str)), "the OpenVINO model's rt_info"
        )
        config = {
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": self._recipe().get("inference_precision_hint", "f32"),
        }
        if thread_setting() > 0:
            config["INFERENCE_NUM_THREADS"] = thread_setting()
            # Set where processes share the cores (serving workers, Spark tasks): OpenVINO would
            # pin every process's threads to the same first core. Leave placement to the OS.
            config["ENABLE_CPU_PINNING"] = False
        self.compiled = core.compile_model(model, "CPU", config)
        width = self.compiled.output(0).get_partial_shape()[-1]
        if width.is_static and width.get_length() != len(self.labels):
            raise MlflowException(f"OpenVINO model outputs {width.get_length()} logits for {len(self.labels)} labels")
        dtypes = {"i64": np.int64, "i32": np.int32}
        self._ov_inputs = {i.get_any_name(): dtypes[i.get_element_type().get_type_name()] for i in self.compiled.inputs}
        self._ov_local = threading.local()
        self._infer = self._infer_openvino

    def _infer_openvino(self, encoded: dict[str, np.ndarray]) -> np.ndarray:
        request = getattr(self._ov_local, "request", None)
        if request is None:
            request = self._ov_local.request = self.compiled.create_infer_request()
        feed = {}
        for name, dtype in self._ov_inputs.items():
            if name not in encoded:
                raise MlflowException(f"the tokenizer gives no {name!r}, which the OpenVINO model needs")
            feed[name] = encoded[name].astype(dtype, copy=False)
        return np.array(request.infer(feed)[self.compiled.output(0)], dtype=np.float32)

    def _recipe(self) -> dict:
        config = self.artifact_paths.get("quant_config")
        return json.loads(Path(config).read_text(encoding="utf-8")) if config else {}

    def _load_torchscript(self, path: str) -> None:
        """A TorchScript archive (torch dynamic INT8). ``torch.jit.load`` rebuilds it with
        TorchScript's own restricted unpickler (tensors and TorchScript types only, no Python
        globals), never Python pickle; ``torch.load`` is not used. The label order and the
        traced input names travel in the archive's extra files."""
        import torch

        self._torch = torch
        # INT8 numerics depend on the quantised kernel engine (x86 uses 7-bit activations,
        # qnnpack 8-bit), and packed weights are rebuilt for the engine current at load.
        config = self.artifact_paths.get("quant_config")
        engine = json.loads(Path(config).read_text(encoding="utf-8")).get("torch_engine") if config else None
        if engine and engine != torch.backends.quantized.engine:
            if engine not in torch.backends.quantized.supported_engines:
                raise MlflowException(f"this torch has no {engine!r} quantised engine, which the model was built for")
            torch.backends.quantized.engine = engine
        extra = {TORCHSCRIPT_LABELS_FILE: "", TORCHSCRIPT_INPUTS_FILE: ""}
        self.model = torch.jit.load(path, map_location="cpu", _extra_files=extra).eval()
        if not extra[TORCHSCRIPT_LABELS_FILE]:
            raise MlflowException(f"TorchScript model has no {TORCHSCRIPT_LABELS_FILE!r}: label order unknown")
        self._check_labels(json.loads(extra[TORCHSCRIPT_LABELS_FILE]), "the TorchScript file's extra files")
        self._ts_inputs = json.loads(extra[TORCHSCRIPT_INPUTS_FILE] or json.dumps(TOKEN_INPUTS))
        self._infer = self._infer_torchscript

    def _infer_torchscript(self, encoded: dict[str, np.ndarray]) -> np.ndarray:
        # A traced module takes its inputs by position: put them in the traced order by name.
        missing = [n for n in self._ts_inputs if n not in encoded]
        if missing:
            raise MlflowException(f"the tokenizer gives no {missing}, which the TorchScript model needs")
        with self._torch.inference_mode():
            out = self.model(*(self._torch.from_numpy(encoded[n]) for n in self._ts_inputs))
        return (out[0] if isinstance(out, (tuple, list)) else out).float().numpy()

    def _load_tensorrt(self, path: str) -> None:
        """A TensorRT engine folder (NVIDIA GPU only). The CUDA code lives in quantgate.trt_runtime,
        imported here and nowhere else in serving: it refuses an engine built for another GPU
        architecture or TensorRT version, and binds every tensor by name with the engine's dtype."""
        try:
            from quantgate import trt_runtime

            backend = trt_runtime.load(path, self.labels, self.tokenizer.pad_token_id)
        except ImportError as exc:  # no quantgate, tensorrt or pycuda here
            raise MlflowException(
                f"serving a TensorRT variant needs an NVIDIA GPU and quantgate[gpu] installed: {exc}"
            ) from exc
        except ValueError as exc:  # trt_shapes.TrtError: incompatible engine, label or I/O mismatch
            raise MlflowException(str(exc)) from exc
        self._check_labels(backend.engine.meta["labels"], "the engine's engine_meta.json")
        self._infer = backend.logits

    def _check_labels(self, own: list[str], where: str) -> None:
        if list(own) != list(self.labels):
            raise MlflowException(
                f"label order mismatch: label_map.json says {self.labels} but {where} says "
                f"{list(own)}; this variant would mislabel, refusing to load"
            )

    def _infer_torch(self, encoded: dict[str, np.ndarray]) -> np.ndarray:
        with self._torch.inference_mode():
            feed = {k: self._torch.from_numpy(v) for k, v in encoded.items()}
            return self.model(**feed).logits.float().numpy()

    def _infer_onnx(self, encoded: dict[str, np.ndarray]) -> np.ndarray:
        feed = {}
        for name, dtype in self._onnx_inputs.items():
            if name not in encoded:
                raise MlflowException(f"the tokenizer gives no {name!r}, which the ONNX graph needs")
            feed[name] = encoded[name].astype(dtype, copy=False)
        return self.session.run(None, feed)[0]

    # ------------------------------------------------------------------ API
    def encode(self, texts: list[str]) -> dict[str, np.ndarray]:
        with self._tokenizer_lock:
            enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="np")
        return {k: v.astype(np.int64) for k, v in enc.items()}

    def infer(self, encoded: dict[str, np.ndarray]) -> np.ndarray:
        """Logits for an encoded batch (the part latency figures call 'inference')."""
        return self._infer(encoded)

    def predict_proba(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        out = []
        for lo in range(0, len(texts), batch_size):
            logits = self.infer(self.encode(texts[lo : lo + batch_size])).astype(np.float64)
            logits -= logits.max(axis=1, keepdims=True)
            p = np.exp(logits)
            out.append(p / p.sum(axis=1, keepdims=True))
        return np.concatenate(out) if out else np.zeros((0, len(self.labels)))

    def _texts(self, model_input) -> list[str]:
        if isinstance(model_input, pd.DataFrame):
            if "text" not in model_input.columns:
                names = [str(c)[:40] for c in model_input.columns[:10]]
                raise _bad_input(f"input needs a 'text' column; got columns {names}")
            values = model_input["text"].tolist()
        elif isinstance(model_input, dict) and "text" in model_input:
            values = model_input["text"]
            values = [values] if isinstance(values, str) else list(values)
        elif isinstance(model_input, (list, tuple)) and all(isinstance(v, str) for v in model_input):
            values = list(model_input)
        else:
            raise _bad_input("input must be a table with a 'text' column of strings")
        if not values:
            raise _bad_input("no input rows")
        if len(values) > self.max_batch:
            raise _bad_input(f"{len(values)} rows is above this model's limit of {self.max_batch} per request")
        for i, v in enumerate(values):
            if not isinstance(v, str):
                kind = "null" if v is None or (isinstance(v, float) and np.isnan(v)) else type(v).__name__
                raise _bad_input(f"row {i}: 'text' must be a non-empty string, got {kind}")
            if not v.strip():
                raise _bad_input(f"row {i}: 'text' is empty")
        return values

    def _top_k(self, params) -> int:
        k = (params or {}).get("top_k", DEFAULT_TOP_K)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= len(self.labels):
            raise _bad_input(f"param top_k must be an integer from 1 to {len(self.labels)}")
        return int(k)

    def truncation(self, texts: list[str]) -> tuple[list[str], list[bool]]:
        """Cut absurdly long texts before tokenising, and flag every text that the model
        will not see whole (longer than ``max_length`` tokens)."""
        cap = self.max_length * CHARS_PER_TOKEN_CAP
        cut = [t[:cap] for t in texts]
        flags = [len(t) > cap for t in texts]
        with self._tokenizer_lock:
            lengths = self.tokenizer(cut, truncation=False, add_special_tokens=True)["input_ids"]
        return cut, [f or len(ids) > self.max_length for f, ids in zip(flags, lengths)]

    def predict(self, context, model_input: pd.DataFrame, params=None):
        """Per text: the label, its probability, the ``top_k`` labels with probabilities
        (param, default 3), and whether the text was truncated to the model's max length."""
        k = self._top_k(params)
        texts, truncated = self.truncation(self._texts(model_input))
        probs = self.predict_proba(texts)
        order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        return pd.DataFrame(
            {
                "label": [self.labels[row[0]] for row in order],
                "probability": [float(p[row[0]]) for p, row in zip(probs, order)],
                "top_k": [
                    [{"label": self.labels[j], "probability": float(p[j])} for j in row] for p, row in zip(probs, order)
                ],
                "truncated": truncated,
            }
        )


mlflow.models.set_model(NewsClassifier())
