"""TensorRT build and inference: the only module that imports ``tensorrt`` and ``pycuda``,
and only inside functions (they are the optional ``[gpu]`` extra).

Build: the ONNX precision graph (FP16 with LayerNorm/Softmax in FP32, or INT8 Q/DQ) is
parsed into a *strongly typed* network - every layer runs in the type the graph gives it,
there are no FP16/INT8 builder flags - with one optimisation profile for the dynamic batch
and sequence axes, and serialised to bytes (``build_serialized_network``).

Run: :class:`TrtEngine` deserialises those bytes after :func:`quantgate.trt_checks.check_compatible`
accepts this GPU and TensorRT version, reads every I/O tensor's name, mode, dtype and profile
from the engine, and on each call binds host arrays by name through
:func:`quantgate.trt_checks.bind_inputs`. :class:`TrtClassifier` is what the serving pyfunc uses.

Artifact layout (the variant's ``model`` artifact, a folder covered by the SHA-256 manifest):
``model.plan`` (the serialised engine) and ``engine_meta.json`` (GPU name and compute
capability, TensorRT and CUDA versions, label order, profile, I/O description).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np

from quantgate.trt_checks import bind_inputs, check_compatible, check_label_map, logits_width, read_logits
from quantgate.trt_shapes import (
    LOGITS,
    Profile,
    TensorSpec,
    TrtError,
    check_io,
    fit_to_profile,
    pad_values_for,
    split_io,
)

ENGINE_FILE = "model.plan"
META_FILE = "engine_meta.json"
META_FORMAT = 1


def _trt():
    import tensorrt as trt

    return trt


def _cuda():
    import pycuda.driver as cuda

    cuda.init()
    return cuda


_LOGGER = None


def _logger():
    global _LOGGER
    if _LOGGER is None:
        trt = _trt()
        _LOGGER = trt.Logger(trt.Logger.WARNING)
    return _LOGGER


def _np_dtype(trt_dtype) -> str:
    trt = _trt()
    names = {
        trt.DataType.FLOAT: "float32",
        trt.DataType.HALF: "float16",
        trt.DataType.INT32: "int32",
        trt.DataType.INT8: "int8",
        trt.DataType.BOOL: "bool",
    }
    if hasattr(trt.DataType, "INT64"):
        names[trt.DataType.INT64] = "int64"
    if trt_dtype not in names:
        raise TrtError(f"engine I/O dtype {trt_dtype} has no numpy equivalent this backend feeds")
    return names[trt_dtype]


def environment(device: int = 0) -> dict:
    """What an engine is tied to: GPU name, compute capability, TensorRT and CUDA versions."""
    trt, cuda = _trt(), _cuda()
    dev = cuda.Device(device)
    major, minor = dev.compute_capability()
    driver = cuda.get_driver_version()  # e.g. 12040
    return {
        "gpu_name": dev.name(),
        "compute_capability": f"{major}.{minor}",
        "tensorrt_version": trt.__version__,
        "cuda_driver_version": f"{driver // 1000}.{driver % 1000 // 10}",
        "cuda_version": ".".join(map(str, cuda.get_version())),  # the CUDA pycuda was built for
    }


def engine_specs(engine) -> list[TensorSpec]:
    trt = _trt()
    specs = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        mode = "input" if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else "output"
        specs.append(
            TensorSpec(name, mode, _np_dtype(engine.get_tensor_dtype(name)), tuple(engine.get_tensor_shape(name)))
        )
    return specs


def engine_profile(engine, specs: list[TensorSpec]) -> Profile:
    ins, _ = split_io(specs)
    return Profile.from_engine(
        {s.name: tuple(tuple(d) for d in engine.get_tensor_profile_shape(s.name, 0)) for s in ins}
    )


# --------------------------------------------------------------------------- build
def build_engine(onnx_path: str | Path, profile: Profile, workspace_mib: int = 4096) -> bytes:
    """A serialised, strongly typed engine for ``onnx_path`` with one optimisation profile."""
    trt = _trt()
    logger = _logger()
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise TrtError(f"TensorRT could not parse {Path(onnx_path).name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mib) << 20)
    opt_profile = builder.create_optimization_profile()
    lo, opt, hi = profile.shapes()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        if len(tensor.shape) != 2:
            raise TrtError(f"network input {tensor.name!r} has shape {tuple(tensor.shape)}, expected [batch, sequence]")
        opt_profile.set_shape(tensor.name, lo, opt, hi)
    config.add_optimization_profile(opt_profile)
    blob = builder.build_serialized_network(network, config)
    if blob is None:
        raise TrtError(f"TensorRT failed to build an engine from {Path(onnx_path).name} (see the log above)")
    return bytes(memoryview(blob))


def write_engine_dir(out: Path, engine_bytes: bytes, meta: dict) -> Path:
    """``out/model.plan`` and ``out/engine_meta.json``; the I/O description and profile
    recorded are read back from the engine itself, not from what was asked for."""
    out.mkdir(parents=True, exist_ok=True)
    (out / ENGINE_FILE).write_bytes(engine_bytes)
    trt = _trt()
    engine = trt.Runtime(_logger()).deserialize_cuda_engine(engine_bytes)
    if engine is None:
        raise TrtError("the engine just built does not deserialise")
    specs = engine_specs(engine)
    full = {
        **meta,
        "format": META_FORMAT,
        "engine_file": ENGINE_FILE,
        "io": [s.as_dict() for s in specs],
        "profile": engine_profile(engine, specs).as_dict(),
    }
    (out / META_FILE).write_text(json.dumps(full, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return out


# --------------------------------------------------------------------------- run
class TrtEngine:
    """A deserialised engine with one execution context; ``run`` is by name only."""

    def __init__(self, engine_dir: str | Path, device: int = 0):
        here = environment(device)  # first: without TensorRT/CUDA/GPU nothing else matters
        engine_dir = Path(engine_dir)
        self.meta = json.loads((engine_dir / META_FILE).read_text(encoding="utf-8"))
        if self.meta.get("format") != META_FORMAT:
            raise TrtError(f"{META_FILE}: format {self.meta.get('format')!r}, this code reads {META_FORMAT}")
        check_compatible(self.meta, here)  # before deserialising anything
        trt, cuda = _trt(), _cuda()
        self._cuda = cuda
        self._ctx = cuda.Device(device).retain_primary_context()
        self._ctx.push()
        try:
            self.engine = trt.Runtime(_logger()).deserialize_cuda_engine(
                (engine_dir / self.meta["engine_file"]).read_bytes()
            )
            if self.engine is None:
                raise TrtError(
                    "TensorRT could not deserialise the engine; it was probably built elsewhere. Rebuild it."
                )
            self.context = self.engine.create_execution_context()
            self.stream = cuda.Stream()
        finally:
            self._ctx.pop()
        self.specs = engine_specs(self.engine)
        recorded = [TensorSpec.from_dict(d) for d in self.meta["io"]]
        if sorted(recorded, key=lambda s: s.name) != sorted(self.specs, key=lambda s: s.name):
            raise TrtError(f"the engine's I/O {self.specs} differs from {META_FILE}'s {recorded}")
        self.profile = engine_profile(self.engine, self.specs)
        self._lock = threading.Lock()

    def run(self, bound: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs by name for inputs already bound by :func:`bind_inputs`."""
        cuda = self._cuda
        ins, outs = split_io(self.specs)
        with self._lock:
            self._ctx.push()
            buffers = []
            try:
                for spec in ins:
                    host = np.ascontiguousarray(bound[spec.name])
                    if host.dtype.name != spec.dtype:
                        raise TrtError(f"{spec.name}: bound as {host.dtype}, the engine takes {spec.dtype}")
                    if not self.context.set_input_shape(spec.name, host.shape):
                        raise TrtError(f"{spec.name}: TensorRT refused shape {host.shape}")
                    dev = cuda.mem_alloc(max(host.nbytes, 1))
                    buffers.append(dev)
                    cuda.memcpy_htod_async(dev, host, self.stream)
                    self.context.set_tensor_address(spec.name, int(dev))
                unset = self.context.infer_shapes()
                if unset:
                    raise TrtError(f"input shapes not set for {list(unset)}")
                results = {}
                for spec in outs:
                    host = np.empty(tuple(self.context.get_tensor_shape(spec.name)), dtype=spec.dtype)
                    dev = cuda.mem_alloc(max(host.nbytes, 1))
                    buffers.append(dev)
                    self.context.set_tensor_address(spec.name, int(dev))
                    results[spec.name] = (host, dev)
                if not self.context.execute_async_v3(self.stream.handle):
                    raise TrtError("TensorRT execution failed")
                for host, dev in results.values():
                    cuda.memcpy_dtoh_async(host, dev, self.stream)
                self.stream.synchronize()
                return {name: host for name, (host, _) in results.items()}
            finally:
                for dev in buffers:
                    dev.free()
                self._ctx.pop()


class TrtClassifier:
    """What the serving pyfunc calls: tokenised batch in, logits in label order out."""

    def __init__(self, engine_dir: str | Path, labels: list[str], pad_token_id: int | None):
        self.engine = TrtEngine(engine_dir)
        self.labels = list(labels)
        check_io(self.engine.specs, self.engine.meta["token_inputs"], (LOGITS,))
        check_label_map(self.labels, self.engine.meta["labels"], logits_width(self.engine.specs))
        self.pad_values = pad_values_for(pad_token_id)

    def logits(self, encoded: dict[str, np.ndarray]) -> np.ndarray:
        out = []
        for chunk, real in fit_to_profile(encoded, self.engine.profile, self.pad_values):
            bound = bind_inputs(self.engine.specs, chunk, self.engine.profile)
            rows = next(iter(bound.values())).shape[0]
            out.append(read_logits(self.engine.run(bound), rows, self.labels)[:real])
        return np.concatenate(out) if out else np.zeros((0, len(self.labels)), dtype=np.float32)


def load(engine_dir: str | Path, labels: list[str], pad_token_id: int | None) -> TrtClassifier:
    return TrtClassifier(engine_dir, labels, pad_token_id)
