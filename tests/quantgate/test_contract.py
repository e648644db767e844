"""One definition per shared name: the pyfunc's literal copies equal the contract's."""

from __future__ import annotations

from quantgate import contract, serving_model
from registry_hooks.gate import thresholds


def test_the_pyfunc_spells_the_label_keys_as_the_contract_does():
    for name in (
        "ONNX_LABELS_KEY",
        "OPENVINO_LABELS_KEY",
        "TORCHSCRIPT_LABELS_FILE",
        "TORCHSCRIPT_INPUTS_FILE",
        "TOKEN_INPUTS",
    ):
        assert getattr(serving_model, name) == getattr(contract, name), name


def test_every_gate_rule_bounds_a_metric_named_in_the_contract():
    names = {v for k, v in vars(contract).items() if k.isupper() and isinstance(v, str)}
    assert {rule.metric for rule in thresholds.RULES} <= names
    assert thresholds.HOST_KEYS is contract.HOST_KEYS
