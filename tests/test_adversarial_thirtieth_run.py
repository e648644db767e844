"""Issue 17, the thirtieth adversarial run: under a key, `main` reused a quantise step by its
inputs digest alone. That digest is a run tag made of public inputs (the next version number
included), so the writer planted a finished run whose tag named a build of an older model; `main`
trained and attested a new FP32 version, then gated and staged the older model's build as its
int8. Now a quantise run is reused only when the version it names is that variant of the FP32
version main just trained, and `quantise`'s own reuse by `recipe_sha256` (a tag anyone can copy)
likewise. The planted state is made as the run made it, through MLflow's public API."""

from __future__ import annotations

import mlflow
from mlflow import MlflowClient
from test_adversarial_signed import COPY, signed  # noqa: F401

from flows.main import variant_of
from flows.quantise import find_existing

VARIANT = "onnx-int8-dynamic"


def _planted_run(params: dict, names: str) -> mlflow.entities.Run:
    """A finished run tagged as main's quantise step, whose version tag names ``names``."""
    with mlflow.start_run(run_name="adv30-planted") as run:
        mlflow.log_params(params)
        mlflow.set_tags({"quantgate.entry_point": "quantise_onnx", f"quantgate.version.{VARIANT}": names})
    return MlflowClient().get_run(run.info.run_id)


def _variant_copy(version: str, parent: str) -> str:
    """``version`` registered again with all its tags, its ``parent_version`` set to ``parent``."""
    client = MlflowClient()
    copy = client.copy_model_version(f"models:/{COPY}/{version}", COPY)
    for tag, value in client.get_model_version(COPY, version).tags.items():
        client.set_model_version_tag(COPY, copy.version, tag, value)
    client.set_model_version_tag(COPY, copy.version, "parent_version", parent)
    return str(copy.version)


def test_main_does_not_reuse_a_planted_quantise_run_that_names_another_models_build(signed):  # noqa: F811
    """The run's case: main has just trained a new FP32 version; the planted run names the
    older model's genuine int8. Before: reused, gated and staged as the new model's int8."""
    client = MlflowClient()
    new_fp32 = str(client.copy_model_version(f"models:/{COPY}/{signed['fp32']}", COPY).version)
    params = {"source": new_fp32, "model_name": COPY, "recipe": VARIANT, "preset": "avx2"}
    accept = variant_of(COPY, new_fp32, VARIANT, params)
    assert not accept(_planted_run(params, signed["int8"]))  # parent_version is the older model
    assert not accept(_planted_run({**params, "source": signed["fp32"]}, signed["int8"]))  # other inputs
    assert accept(_planted_run(params, _variant_copy(signed["int8"], new_fp32)))  # a variant of it: evaluate decides


def test_quantise_reuses_a_build_only_of_the_same_parent(signed):  # noqa: F811
    """`recipe_sha256` copied onto a build of another parent (the older model's int8, as a
    writer can) is not handed on as the new FP32 version's build."""
    client = MlflowClient()
    new_fp32 = client.copy_model_version(f"models:/{COPY}/{signed['fp32']}", COPY)
    genuine = client.get_model_version(COPY, signed["int8"])
    sha = genuine.tags["recipe_sha256"]
    assert find_existing(new_fp32, sha, VARIANT) is None
    own = _variant_copy(signed["int8"], str(new_fp32.version))
    assert str(find_existing(new_fp32, sha, VARIANT).version) == own
    assert find_existing(new_fp32, sha, "onnx-fp32") is None  # another variant's tag, copied
