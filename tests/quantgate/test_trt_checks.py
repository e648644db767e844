"""quantgate.trt_checks without a GPU: the pure functions that decide whether a TensorRT engine
labels correctly - inputs bound by name, the label map and logits checked, the engine matched to
this GPU and TensorRT - over a fake engine I/O description, which is what they take."""

from __future__ import annotations

import numpy as np
import pytest

from quantgate.data import news9_labels
from quantgate.trt_checks import (
    GpuInfo,
    bind_inputs,
    check_compatible,
    check_label_map,
    gpu_from_probe,
    logits_to_labels,
    logits_width,
    read_logits,
    require_gpu,
)
from quantgate.trt_shapes import TensorSpec, TrtError

from trt_fakes import PROFILE, SPECS, fake_feed

LABELS = news9_labels()  # the test models are trained on news9
ENV = {"gpu_name": "NVIDIA H100", "compute_capability": "9.0", "tensorrt_version": "11.0.0"}


# --------------------------------------------------------------------------- binding
def test_inputs_are_bound_by_name_with_the_engines_dtype_in_any_order():
    feed = fake_feed()
    for specs in (SPECS, list(reversed(SPECS))):
        bound = bind_inputs(specs, dict(reversed(list(feed.items()))), PROFILE)
        assert set(bound) == {"input_ids", "attention_mask", "token_type_ids"}
        assert bound["input_ids"].dtype == np.int32 and bound["token_type_ids"].dtype == np.int32
        assert bound["attention_mask"].dtype == np.int64
        for name in feed:  # each buffer holds its own tensor's values, not a neighbour's
            assert np.array_equal(bound[name], feed[name])
        assert all(a.flags["C_CONTIGUOUS"] for a in bound.values())


def test_ids_that_do_not_fit_int32_are_refused_not_wrapped():
    feed = fake_feed()
    feed["input_ids"][0, 3] = 2**31  # wraps to -2**31 under a plain astype
    with pytest.raises(TrtError, match="do not fit the engine's int32"):
        bind_inputs(SPECS, feed, PROFILE)
    feed = fake_feed()
    feed["input_ids"] = feed["input_ids"].astype(np.float32)
    with pytest.raises(TrtError, match="must be integers"):
        bind_inputs(SPECS, feed, PROFILE)


def test_a_missing_or_an_unexpected_input_name_is_refused():
    feed = fake_feed()
    del feed["token_type_ids"]
    with pytest.raises(TrtError, match=r"needs input\(s\) \['token_type_ids'\]"):
        bind_inputs(SPECS, feed, PROFILE)
    feed = {**fake_feed(), "position_ids": np.zeros((2, 10), dtype=np.int64)}
    with pytest.raises(TrtError, match=r"\['position_ids'\], which the engine does not take"):
        bind_inputs(SPECS, feed, PROFILE)
    with pytest.raises(TrtError, match="several tensors"):
        bind_inputs([*SPECS, TensorSpec("input_ids", "input", "int64", (-1, -1))], fake_feed(), PROFILE)


def test_shapes_are_checked_against_the_profile_and_each_other():
    with pytest.raises(TrtError, match="outside the engine's profile"):
        bind_inputs(SPECS, fake_feed(batch=33), PROFILE)
    with pytest.raises(TrtError, match="outside the engine's profile"):
        bind_inputs(SPECS, fake_feed(seq=4), PROFILE)
    feed = fake_feed()
    feed["attention_mask"] = feed["attention_mask"][:, :9]
    with pytest.raises(TrtError, match="disagree in shape"):
        bind_inputs(SPECS, feed, PROFILE)
    feed = fake_feed()
    feed["input_ids"] = feed["input_ids"][0]
    with pytest.raises(TrtError, match="does not fit the engine's"):
        bind_inputs(SPECS, feed, PROFILE)


# --------------------------------------------------------------------------- labels
def test_the_label_map_must_match_the_parent_order_and_the_logits_width():
    labels = list(LABELS)
    check_label_map(labels, labels, logits_width(SPECS))
    swapped = [labels[1], labels[0], *labels[2:]]
    with pytest.raises(TrtError, match="label order mismatch"):
        check_label_map(swapped, labels, 9)
    with pytest.raises(TrtError, match="outputs 8 logits for 9 labels"):
        check_label_map(labels, labels, 8)
    with pytest.raises(TrtError, match="no output named"):
        logits_width(SPECS[1:])


def test_logits_map_to_labels_by_index_and_the_width_is_checked():
    logits = np.full((3, 9), -1.0, dtype=np.float16)
    for row, j in enumerate((4, 0, 8)):
        logits[row, j] = 5.0
    assert logits_to_labels(logits, list(LABELS)) == ["security", "World", "climate"]
    with pytest.raises(TrtError, match="cannot be mapped"):
        logits_to_labels(logits[:, :8], list(LABELS))
    assert read_logits({"logits": logits}, 3, list(LABELS)).dtype == np.float32
    with pytest.raises(TrtError, match=r"expected \(2, 9\)"):
        read_logits({"logits": logits}, 2, list(LABELS))
    with pytest.raises(TrtError, match="no 'logits' output"):
        read_logits({"output_0": logits}, 3, list(LABELS))


# --------------------------------------------------------------------------- compatibility, GPU
def test_an_engine_from_another_gpu_or_tensorrt_is_refused_with_a_rebuild_hint():
    check_compatible(ENV, dict(ENV))
    with pytest.raises(
        TrtError, match=r"compute capability 9.0 \(NVIDIA H100\), this GPU is 8.6 \(NVIDIA A10\).*rebuild"
    ):
        check_compatible(ENV, {**ENV, "compute_capability": "8.6", "gpu_name": "NVIDIA A10"})
    with pytest.raises(TrtError, match="built with TensorRT 11.0.0, this machine has 11.1.0.*quantise_trt"):
        check_compatible(ENV, {**ENV, "tensorrt_version": "11.1.0"})


def test_gpu_detection_reads_nvidia_smi_and_cuda_visible_devices():
    assert gpu_from_probe(None, None, None, "") == "nvidia-smi is not installed (no NVIDIA driver)"
    assert "hides every GPU" in gpu_from_probe("", "/usr/bin/nvidia-smi", 0, "NVIDIA H200, 9.0, 560.1")
    assert "nvidia-smi failed (NVIDIA-SMI has failed" in gpu_from_probe(
        None, "/x", 9, "NVIDIA-SMI has failed because it couldn't communicate"
    )
    assert gpu_from_probe(None, "/x", 0, "") == "nvidia-smi lists no GPU"
    assert gpu_from_probe("0", "/x", 0, "NVIDIA H200, 9.0, 560.35.03\nNVIDIA H200, 9.0, 560.35.03\n") == GpuInfo(
        "NVIDIA H200", "9.0", "560.35.03"
    )
    with pytest.raises(TrtError, match="^TensorRT engines need an NVIDIA GPU; none found: no driver. Run this flow"):
        require_gpu(probe=lambda: "no driver", find_spec=lambda m: object())
    with pytest.raises(TrtError, match=r"found NVIDIA H200 .* \['tensorrt', 'pycuda'\] not installed.*\[gpu\]"):
        require_gpu(probe=lambda: GpuInfo("NVIDIA H200", "9.0", "560"), find_spec=lambda m: None)
    assert (
        require_gpu(probe=lambda: GpuInfo("NVIDIA H200", "9.0", "560"), find_spec=lambda m: object()).name
        == "NVIDIA H200"
    )
