"""Recipe configs: presets, validation errors that name the field, identity hashing. No models."""

from __future__ import annotations

import dataclasses
import json

import click
import pytest

from flows import quantise_trt
from flows.quantise import parse_overrides
from quantgate.recipes import (
    ONNX_VARIANTS,
    PRESETS,
    RECIPE_CLASSES,
    TORCH_VARIANTS,
    OnnxFp16Recipe,
    OnnxInt8DynamicRecipe,
    OnnxInt8StaticRecipe,
    RecipeError,
    TorchInt8DynamicRecipe,
    TrtFp16Recipe,
    TrtInt8Recipe,
    build_recipe,
    detect_preset,
    get_preset,
    recipe_from_json,
)

from trt_fakes import PROFILE


def test_the_five_variants_and_their_runtimes():
    assert set(ONNX_VARIANTS) == {"onnx-fp32", "onnx-int8-dynamic", "onnx-int8-static", "onnx-fp16"}
    assert TORCH_VARIANTS == ("torch-int8-dynamic",)
    assert {c.precision for c in RECIPE_CLASSES.values()} == {"fp32", "int8", "fp16"}


CPU_VARIANTS = sorted(v for v, c in RECIPE_CLASSES.items() if c.device == "cpu")


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("variant", CPU_VARIANTS)
def test_every_recipe_builds_for_every_preset(variant, preset):
    recipe = build_recipe(variant, preset)
    assert recipe.variant == variant and recipe.preset == preset
    resolved = recipe.resolved()
    assert json.loads(json.dumps(resolved)) == resolved  # plain JSON, as logged and stored
    assert all(key.startswith(f"{variant}.") for key in recipe.params())


@pytest.mark.parametrize("variant", ["trt-fp16", "trt-int8"])
def test_gpu_recipes_live_with_the_others_take_no_cpu_preset_and_rebuild_from_json(variant):
    recipe = build_recipe(variant, "avx2", batch=(1, 4, 16))
    assert recipe.preset == "gpu" and recipe.device == "gpu" and recipe.batch == (1, 4, 16)
    assert recipe_from_json(json.dumps(recipe.resolved())) == recipe
    with pytest.raises(RecipeError, match="batch"):
        build_recipe(variant, batch=(4, 2, 1))


def test_presets_choose_the_formats_their_cpus_need():
    avx2, vnni = build_recipe("onnx-int8-dynamic", "avx2"), build_recipe("onnx-int8-dynamic", "avx512_vnni")
    assert (avx2.weight_type, avx2.reduce_range) == ("QUInt8", False)  # u8*u8: VPMADDUBSW is not used
    assert (vnni.weight_type, vnni.reduce_range) == ("QInt8", False)
    assert build_recipe("torch-int8-dynamic", "arm64").torch_engine == "qnnpack"
    static = build_recipe("onnx-int8-static", "avx2")
    assert (static.weight_type, static.activation_type, static.op_types) == ("QInt8", "QUInt8", ("MatMul",))


def test_auto_preset_reads_cpu_flags():
    assert detect_preset({"avx2", "avx512f", "avx512_vnni"}, "x86_64") == "avx512_vnni"
    assert detect_preset({"avx2", "fma"}, "x86_64") == "avx2"
    assert detect_preset(set(), "aarch64") == "arm64"
    with pytest.raises(RecipeError, match="preset"):
        detect_preset({"sse4_2"}, "x86_64")
    assert get_preset("auto").name in PRESETS


@pytest.mark.parametrize(
    "make, field",
    [
        (lambda: OnnxInt8DynamicRecipe(weight_type="int8"), "weight_type"),
        (lambda: OnnxInt8DynamicRecipe(per_channel="yes"), "per_channel"),
        (lambda: OnnxInt8DynamicRecipe(op_types=("Conv",)), "op_types"),
        (lambda: OnnxInt8DynamicRecipe(op_types=()), "op_types"),
        (lambda: OnnxInt8DynamicRecipe(opset=9), "opset"),
        (lambda: OnnxInt8StaticRecipe(calibration_method="KL"), "calibration_method"),
        (lambda: OnnxInt8StaticRecipe(calibration_size=0), "calibration_size"),
        (lambda: OnnxInt8StaticRecipe(calibration_size=True), "calibration_size"),
        (lambda: OnnxInt8StaticRecipe(percentile=100.0), "percentile"),
        (lambda: OnnxInt8StaticRecipe(op_types=("MatMul", "Gather")), "op_types"),
        (lambda: OnnxInt8StaticRecipe(fuse_graph=False), "fuse_graph"),
        (lambda: OnnxInt8StaticRecipe(calibration_dataset=" "), "calibration_dataset"),
        (lambda: OnnxInt8StaticRecipe(calibration_options="{text_column: body}"), "calibration_options"),
        (lambda: OnnxInt8StaticRecipe(calibration_options='{"columns": "body"}'), "calibration_options"),
        (lambda: OnnxInt8StaticRecipe(calibration_options='["body"]'), "calibration_options"),
        (lambda: TrtInt8Recipe(calibration_options="x"), "calibration_options"),
        (lambda: OnnxFp16Recipe(keep_io_types=False), "keep_io_types"),
        (lambda: OnnxFp16Recipe(keep_fp32_ops=("SkipLayerNormalization",)), "keep_fp32_ops"),
        (lambda: TorchInt8DynamicRecipe(torch_engine="tensorrt"), "torch_engine"),
        (lambda: TorchInt8DynamicRecipe(preset="avx9000"), "preset"),
        (lambda: build_recipe("onnx-int4", "avx2"), "variant"),
        (lambda: build_recipe("onnx-int8-dynamic", "sparc"), "preset"),
        (lambda: build_recipe("onnx-int8-dynamic", "avx2", calibration_size=64), "calibration_size"),
    ],
)
def test_bad_values_fail_at_construction_naming_the_field(make, field):
    with pytest.raises(RecipeError, match=rf"^{field}: "):
        make()


def test_recipes_are_frozen():
    recipe = build_recipe("onnx-int8-dynamic", "avx2")
    with pytest.raises(dataclasses.FrozenInstanceError):
        recipe.per_channel = False


def test_identity_changes_with_any_field_and_with_the_build():
    a = build_recipe("onnx-int8-static", "avx2")
    assert a.sha256("x") == build_recipe("onnx-int8-static", "avx2").sha256("x")
    assert a.sha256("x") != build_recipe("onnx-int8-static", "avx2", calibration_size=64).sha256("x")
    assert a.sha256("x") != a.sha256("y")  # other parent, code or libraries


def test_quant_config_json_round_trips():
    recipe = build_recipe("onnx-fp16", "avx512_vnni")
    assert recipe_from_json(json.dumps(recipe.resolved())) == recipe


def test_cli_overrides_parse_as_json_where_they_can():
    parsed = parse_overrides(
        (
            "onnx-int8-static.calibration_size=64",
            "onnx-int8-static.calibration_method=Percentile",
            'onnx-int8-dynamic.op_types=["MatMul"]',
            "torch-int8-dynamic.freeze=false",
        )
    )
    assert parsed == {
        "onnx-int8-static": {"calibration_size": 64, "calibration_method": "Percentile"},
        "onnx-int8-dynamic": {"op_types": ("MatMul",)},
        "torch-int8-dynamic": {"freeze": False},
    }
    with pytest.raises(click.BadParameter):
        parse_overrides(("calibration_size=64",))


# --------------------------------------------------------------------------- TensorRT recipes
def test_trt_recipes_are_validated_and_the_profile_is_part_of_their_identity():
    fp16, int8 = quantise_trt.recipes_for("all", batch="1,8,32", seq_len="8,64,128", calibration_size=64)
    assert (fp16.variant, fp16.precision, fp16.runtime) == ("trt-fp16", "fp16", "tensorrt")
    assert int8.calibration_size == 64 and int8.batch == (1, 8, 32) and int8.profile() == PROFILE
    assert fp16.sha256("x") != TrtFp16Recipe(batch=(1, 8, 64)).sha256("x")
    for bad, match in (({"batch": "4,2,8"}, "batch"), ({"seq_len": "8,64"}, "seq_len"), ({"preset": "avx2"}, "preset")):
        with pytest.raises(RecipeError, match=match):
            TrtFp16Recipe(**bad)
    with pytest.raises(RecipeError, match="LayerNormalization and Softmax"):
        TrtFp16Recipe(keep_fp32_ops=("Softmax",))
    with pytest.raises(RecipeError, match="calibration_size"):
        TrtInt8Recipe(calibration_size=2)
    # Q/DQ on the weight layers' inputs only, the residual stream in float, the head INT8 too
    assert (int8.qdq_matmul_outputs, int8.float_residual, int8.op_types) == (False, True, ("MatMul", "Gemm"))
    assert int8.sha256("x") != TrtInt8Recipe(calibration_size=64, float_residual=False).sha256("x")
    for bad, match in (
        ({"qdq_matmul_outputs": "no"}, "qdq_matmul_outputs"),
        ({"float_residual": 1}, "float_residual"),
        ({"op_types": ("Gemm",)}, "op_types"),
        ({"op_types": ["MatMul"]}, "op_types"),
        ({"op_types": ("MatMul", "Conv")}, "op_types"),
    ):
        with pytest.raises(RecipeError, match=match):
            TrtInt8Recipe(**bad)


def test_calibration_defaults_to_the_parents_data_which_a_backend_cannot_load_unresolved():
    from quantgate.onnx_graph import calibration_data

    assert OnnxInt8StaticRecipe().calibration_dataset == "auto"
    with pytest.raises(RecipeError, match="resolved by the quantise step to the parent's training data"):
        calibration_data(OnnxInt8StaticRecipe())
    options = '{"labels": "billing,bug,account"}'
    named = OnnxInt8StaticRecipe(calibration_dataset="support3", calibration_options=options)
    assert calibration_data(named).labels == ("billing", "bug", "account")
