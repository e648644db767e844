"""A toy runtime, added the way the README says a runtime is added: this backend module and
its loader (``toy_loader.py``), nothing else in quantgate.

Runtime ``onnx-copy`` builds one variant, ``onnx-copy-fp32``: the FP32 parent's plain ONNX export,
label order stamped in, served by ONNX Runtime through ``toy_loader.load``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from quantgate.backends import Backend, Built, register_backend
from quantgate.onnx_graph import export_onnx, stamp_labels
from quantgate.recipes import Recipe, RecipeError, register_recipe


@register_recipe
@dataclass(frozen=True)
class OnnxCopyRecipe(Recipe):
    """The parent's ONNX export, unchanged."""

    variant: ClassVar[str] = "onnx-copy-fp32"
    precision: ClassVar[str] = "fp32"
    runtime: ClassVar[str] = "onnx-copy"

    opset: int = 17

    def validate(self):
        if self.opset not in range(14, 22):
            raise RecipeError(f"opset: must be in [14, 21], got {self.opset!r}")


def build(recipe: Recipe, parent, workdir: Path) -> Built:
    out = export_onnx(parent.model, parent.tokenizer, workdir / f"{recipe.variant}.onnx", recipe.opset)
    stamp_labels(out, parent.labels)
    return Built(out)


BACKEND = register_backend(
    Backend(
        runtime="onnx-copy",
        packages=("mlflow", "onnxruntime", "transformers", "tokenizers", "numpy", "pandas"),
        build=build,
        loader=Path(__file__).with_name("toy_loader.py"),
    )
)
