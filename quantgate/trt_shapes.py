"""What a TensorRT engine's tensors look like, as plain data: no TensorRT, no CUDA, no GPU
needed to test it.

* :class:`TensorSpec` describes one engine input or output (name, mode, numpy dtype, shape);
  :func:`check_io` checks the engine takes and gives exactly the expected names;
* :class:`ShapeRange` / :class:`Profile` check min <= opt <= max and that a requested shape
  lies inside the profile; :func:`fit_to_profile` splits a batch larger than the profile's
  max and pads a sequence shorter than its min (pad id, attention mask 0: the model ignores it);
* :func:`specs_from_onnx` reads the I/O description of the ONNX graph an engine is built from
  (optionally with int32 token inputs), so the checks of :mod:`quantgate.trt_checks` can be
  tested on the CPU against the real exported graph.

Only :mod:`quantgate.trt_runtime` touches TensorRT and pycuda; it calls into this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from quantgate.errors import UserError

LOGITS = "logits"
MODES = ("input", "output")


class TrtError(UserError):
    """A TensorRT variant that would compute or label wrongly; the message says what and why."""


# --------------------------------------------------------------------------- I/O description
@dataclass(frozen=True)
class TensorSpec:
    """One engine I/O tensor as the engine declares it. ``shape`` uses -1 for a dynamic axis."""

    name: str
    mode: str  # "input" | "output"
    dtype: str  # numpy dtype name: "int32", "int64", "float16", "float32", ...
    shape: tuple[int, ...]

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise TrtError(f"tensor name must be a non-empty string, got {self.name!r}")
        if self.mode not in MODES:
            raise TrtError(f"tensor {self.name!r}: mode must be one of {list(MODES)}, got {self.mode!r}")
        try:
            canonical = np.dtype(self.dtype).name
        except TypeError as exc:
            raise TrtError(f"tensor {self.name!r}: unknown dtype {self.dtype!r}") from exc
        object.__setattr__(self, "dtype", canonical)
        shape = tuple(self.shape)
        if any(isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < -1 for d in shape):
            raise TrtError(f"tensor {self.name!r}: shape must be integers >= -1, got {self.shape!r}")
        object.__setattr__(self, "shape", tuple(int(d) for d in shape))

    def as_dict(self) -> dict:
        return {"name": self.name, "mode": self.mode, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, raw: dict) -> TensorSpec:
        return cls(raw["name"], raw["mode"], raw["dtype"], tuple(raw["shape"]))


def split_io(specs: list[TensorSpec]) -> tuple[list[TensorSpec], list[TensorSpec]]:
    names = [s.name for s in specs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise TrtError(f"the engine names several tensors {dup}: cannot bind by name")
    return [s for s in specs if s.mode == "input"], [s for s in specs if s.mode == "output"]


def check_io(
    specs: list[TensorSpec], inputs: tuple[str, ...] | list[str], outputs: tuple[str, ...] | list[str] = (LOGITS,)
) -> None:
    """The engine's inputs and outputs must be exactly the named ones (any order)."""
    ins, outs = split_io(specs)
    for kind, have, want in (("input", [s.name for s in ins], inputs), ("output", [s.name for s in outs], outputs)):
        missing, extra = sorted(set(want) - set(have)), sorted(set(have) - set(want))
        if missing or extra:
            raise TrtError(
                f"engine {kind}s {sorted(have)} do not match the expected {sorted(want)}"
                + (f"; missing {missing}" if missing else "")
                + (f"; unexpected {extra}" if extra else "")
            )


# --------------------------------------------------------------------------- shape profiles
@dataclass(frozen=True)
class ShapeRange:
    """min <= opt <= max for one dynamic axis of an optimisation profile."""

    min: int
    opt: int
    max: int
    what: str = field(default="axis", compare=False)

    def __post_init__(self):
        values = (self.min, self.opt, self.max)
        if any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1 for v in values):
            raise TrtError(f"{self.what}: min, opt and max must be positive integers, got {values}")
        if not self.min <= self.opt <= self.max:
            raise TrtError(f"{self.what}: needs min <= opt <= max, got min={self.min} opt={self.opt} max={self.max}")

    def contains(self, value: int) -> bool:
        return self.min <= value <= self.max

    def as_list(self) -> list[int]:
        return [int(self.min), int(self.opt), int(self.max)]


def parse_range(text, what: str) -> ShapeRange:
    """``"1,8,32"`` (or a 3-sequence) -> ShapeRange(1, 8, 32)."""
    parts = [p.strip() for p in text.split(",")] if isinstance(text, str) else list(text)
    if len(parts) != 3:
        raise TrtError(f"{what}: expected three values min,opt,max, got {text!r}")
    try:
        values = [int(p) for p in parts]
    except (TypeError, ValueError):
        raise TrtError(f"{what}: expected integers min,opt,max, got {text!r}") from None
    return ShapeRange(*values, what=what)


@dataclass(frozen=True)
class Profile:
    """The optimisation profile of a [batch, sequence] token-input engine."""

    batch: ShapeRange
    seq_len: ShapeRange

    def shapes(self) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
        """(min, opt, max) shapes of every 2-D token input, as ``set_shape`` takes them."""
        b, s = self.batch, self.seq_len
        return (b.min, s.min), (b.opt, s.opt), (b.max, s.max)

    def check(self, shape: tuple[int, ...], name: str = "input") -> None:
        if len(shape) != 2:
            raise TrtError(f"{name}: expected a [batch, sequence] array, got shape {tuple(shape)}")
        batch, seq = shape
        if not self.batch.contains(batch) or not self.seq_len.contains(seq):
            raise TrtError(
                f"{name}: shape {tuple(shape)} is outside the engine's profile "
                f"(batch {self.batch.min}..{self.batch.max}, sequence {self.seq_len.min}..{self.seq_len.max})"
            )

    def as_dict(self) -> dict:
        return {"batch": self.batch.as_list(), "seq_len": self.seq_len.as_list()}

    @classmethod
    def from_dict(cls, raw: dict) -> Profile:
        return cls(parse_range(raw["batch"], "batch"), parse_range(raw["seq_len"], "seq_len"))

    @classmethod
    def from_engine(cls, shapes: dict[str, tuple]) -> Profile:
        """From the engine's own profile 0: {input name: (min shape, opt shape, max shape)}.
        Every token input must have the same [batch, sequence] profile."""
        found = {}
        for name, (lo, opt, hi) in shapes.items():
            if not len(lo) == len(opt) == len(hi) == 2:
                raise TrtError(f"engine input {name!r} is not [batch, sequence]: profile {lo}/{opt}/{hi}")
            found[name] = ((lo[0], opt[0], hi[0]), (lo[1], opt[1], hi[1]))
        if not found or len(set(found.values())) != 1:
            raise TrtError(f"engine token inputs have different optimisation profiles: {found}")
        ((b, s),) = set(found.values())
        return cls(ShapeRange(*map(int, b), what="batch"), ShapeRange(*map(int, s), what="seq_len"))


def check_profile_fits(profile: Profile, max_length: int) -> None:
    """The serving pyfunc truncates to ``max_length`` tokens: the profile must reach that far."""
    if profile.seq_len.max < max_length:
        raise TrtError(
            f"seq_len: max {profile.seq_len.max} is below the model's max_length {max_length}; "
            f"a long headline would not fit the engine (use max >= {max_length})"
        )


# --------------------------------------------------------------------------- fitting a batch to the profile
def fit_to_profile(
    encoded: dict[str, np.ndarray], profile: Profile, pad_values: dict[str, int]
) -> list[tuple[dict[str, np.ndarray], int]]:
    """Split a tokenised batch into chunks the profile accepts, each with its count of real
    rows: at most ``batch.max`` rows, padded up to ``batch.min`` rows and ``seq_len.min``
    tokens (ids with the pad id, attention mask and token types with 0, so the model ignores
    the padding; the caller drops the padded rows' logits). A sequence longer than
    ``seq_len.max`` is refused, never cut: cutting would change what the model reads."""
    if not encoded:
        raise TrtError("nothing to feed: the tokenizer gave no inputs")
    shapes = {np.asarray(a).shape for a in encoded.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise TrtError(f"token inputs must share one [batch, sequence] shape, got {sorted(shapes)}")
    rows, seq = next(iter(shapes))
    if seq > profile.seq_len.max:
        raise TrtError(f"sequence length {seq} is above the engine's profile max {profile.seq_len.max}")
    unknown = sorted(set(encoded) - set(pad_values))
    if unknown and (
        seq < profile.seq_len.min or rows % profile.batch.max and rows % profile.batch.max < profile.batch.min
    ):
        raise TrtError(f"no pad value for {unknown}: cannot pad the batch to the engine's profile")
    chunks = []
    for lo in range(0, rows, profile.batch.max):
        real = min(profile.batch.max, rows - lo)
        pad_rows, pad_cols = max(0, profile.batch.min - real), max(0, profile.seq_len.min - seq)
        chunk = {}
        for name, array in encoded.items():
            part = np.asarray(array)[lo : lo + real]
            if pad_rows or pad_cols:
                part = np.pad(part, ((0, pad_rows), (0, pad_cols)), constant_values=pad_values[name])
            chunk[name] = part
        chunks.append((chunk, real))
    return chunks


def pad_values_for(pad_token_id: int | None) -> dict[str, int]:
    return {"input_ids": int(pad_token_id or 0), "attention_mask": 0, "token_type_ids": 0}


# --------------------------------------------------------------------------- ONNX graph -> I/O description
def specs_from_onnx(model, *, int_dtype: str | None = None) -> list[TensorSpec]:
    """The I/O description of an ONNX graph (a ``onnx.ModelProto`` or a path to one), as the
    engine built from it would declare it: graph inputs (initializers excluded) then outputs,
    each with its name, numpy dtype name and shape (a symbolic or unknown dim is -1).

    ``int_dtype`` (e.g. ``"int32"``) overrides the dtype of every *integer input*, to describe
    an engine that takes its token ids in that type while the graph declares int64. Outputs
    keep the graph's types."""
    import onnx
    from onnx import helper

    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    if int_dtype is not None:
        try:
            override = np.dtype(int_dtype)
        except TypeError as exc:
            raise TrtError(f"int_dtype: unknown dtype {int_dtype!r}") from exc
        if not np.issubdtype(override, np.integer):
            raise TrtError(f"int_dtype: must be an integer dtype, got {override.name}")
    weights = {init.name for init in model.graph.initializer}
    specs = []
    for mode, values in (
        ("input", [v for v in model.graph.input if v.name not in weights]),
        ("output", model.graph.output),
    ):
        for value in values:
            kind = value.type.WhichOneof("value")
            if kind != "tensor_type":
                raise TrtError(f"graph {mode} {value.name!r} is a {kind}, not a tensor")
            tensor = value.type.tensor_type
            try:
                dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type))
            except (KeyError, TypeError, ValueError) as exc:
                raise TrtError(
                    f"graph {mode} {value.name!r}: element type {tensor.elem_type} has no numpy dtype"
                ) from exc
            if mode == "input" and int_dtype is not None and np.issubdtype(dtype, np.integer):
                dtype = override
            if not tensor.HasField("shape"):
                raise TrtError(f"graph {mode} {value.name!r} has no shape (not even its rank)")
            shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim)
            specs.append(TensorSpec(value.name, mode, dtype.name, shape))
    return specs
