"""The names the steps, the evaluator, the gate, the pyfunc and the webhooks share.

One definition each: a metric, tag or table spelled differently in two places is a gate that
silently reads nothing. ``quantgate/serving_model.py`` is the one exception: it is copied into
every logged model and imports nothing from quantgate, so it keeps literal copies of the
label-key names below, and ``tests/quantgate/test_contract.py`` holds them equal.
"""

from __future__ import annotations

# ---------------------------------------------------------------- model inputs and label keys
# Token inputs an encoder may take, in the order a traced (positional) graph takes them.
TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
ONNX_LABELS_KEY = "quantgate.labels"  # ONNX metadata_props key of the label order
OPENVINO_LABELS_KEY = ("quantgate", "labels")  # rt_info path of the label order in an OpenVINO IR
TORCHSCRIPT_LABELS_FILE = "quantgate_labels.json"  # extra files inside a TorchScript archive
TORCHSCRIPT_INPUTS_FILE = "quantgate_inputs.json"

# ---------------------------------------------------------------- version tags
VARIANT_TAG, PRECISION_TAG, RUNTIME_TAG, DEVICE_TAG = "variant", "precision", "runtime", "device"
PARENT_VERSION_TAG = "parent_version"
RECIPE_TAG, RECIPE_SHA_TAG = "recipe", "recipe_sha256"
MANIFEST_TAG = "manifest_sha256"  # artifacts' SHA-256 manifest (meta.json), as registered
MODEL_DIGEST_TAG = "model_sha256"  # every file of the logged model, as registered
EVAL_RUN_TAG, EVAL_STATUS_TAG = "eval_run_id", "eval_status"
EVAL_COMPLETE = "complete"
EVAL_MANIFEST_TAG = "eval_manifest_sha256"  # the manifest the evaluation measured
EVAL_MODEL_DIGEST_TAG = "eval_model_sha256"  # the model digest the evaluation measured
EVAL_METRICS_DIGEST_TAG = "eval_metrics_sha256"  # the evaluation's figures, as logged
EVAL_PREDICTIONS_DIGEST_TAG = "eval_predictions_sha256"  # the predictions table, as logged
EVAL_SIGNATURE_TAG = "eval_evidence_signature"  # HMAC of the evaluation's evidence (quantgate.evidence_signing)
DESCRIPTION_BLOCK_TAG = "description_block_sha256"  # the description block quantgate wrote last (quantgate.description)
FP32_ATTESTATION_TAG = "fp32_attestation"  # HMAC: a key holder vouched for these FP32 files (`quantgate attest`)
# the data digest its training run logged (``dataset_digest``) when it was attested, signed with it
ATTESTED_DATA_TAG = "fp32_dataset_digest"
# SHA-256 of the train step's inputs (main's parameters) when `main` attested it, signed with it;
# "none" when a person ran `quantgate attest` (main then reuses no train run of it)
ATTESTED_TRAINING_TAG = "fp32_training_sha256"
NONE_RECORDED = "none"  # either of the two tags above when the attestation vouches for no such digest
DATA_DIGEST_PARAM = "dataset_digest"  # the train run's param: every split's texts and labels

# ---------------------------------------------------------------- run tags and tables
METRICS_DIGEST_TAG = "quantgate.metrics_sha256"  # on the evaluation run
PREDICTIONS_DIGEST_TAG = "quantgate.predictions_sha256"  # on the evaluation run
EVALUATED_DATA_TAG = "quantgate.test_data_digest"  # on the evaluation run: the test split it measured (signed)
EVIDENCE_SIGNATURE_TAG = "quantgate.evidence_signature"  # on the evaluation run, equal to the version's
VERSION_RUN_TAG = "quantgate.version."  # + variant: the version a step registered or reused
# A file `main` names for its train step: the step writes there which version it registered and
# the digests it computed, outside the store, where no store writer can change them.
TRAIN_RECEIPT_ENV = "QUANTGATE_TRAIN_RECEIPT"
PREDICTIONS_TABLE = "eval_predictions.json"  # one row per test example; the gate's bootstrap reads it


def version_run_tag(variant: str) -> str:
    return f"{VERSION_RUN_TAG}{variant}"


# ---------------------------------------------------------------- evaluation host
# Evaluation-host facts a gate target may require; the evaluator records them as run tags.
HOST_KEYS = {
    "cpu": "host.cpu",
    "isa": "host.isa",
    "cores": "host.cores",
    "machine": "host.machine",
    "gpu": "host.gpu",
    "threads": "threads",
}

# ---------------------------------------------------------------- metrics the gate's rules bound
MACRO_F1 = "macro_f1"
MACRO_F1_DROP = "macro_f1_drop_points"
WORST_CLASS_F1_DROP = "worst_class_f1_drop_points"
TOP1_AGREEMENT = "top1_agreement"
LATENCY_P95 = "latency_p95_ms"
SIZE_MB = "size_mb"
SPEEDUP = "speedup_vs_parent"
BATCH_INVARIANCE = "batch_invariance_agreement"
