"""Issue 17, the forty-sixth adversarial run (on d8fc25e): a text lost, a write through a planted
link and two crashes on store data. Each case is played as the run played it: MLflow's public
API, the sqlite file and the file system for the store writer, the `quantgate` command line for
the key holder."""

from __future__ import annotations

from mlflow import MlflowClient
from test_adversarial import LENIENT, _fresh, _quantgate, _yaml, trivial  # noqa: F401


def test_case_1_a_tag_deleted_before_a_write_does_not_make_this_machine_forget_the_block_it_left(trivial, tmp_path):  # noqa: F811
    """The writer deleted the block's tag just before the key holder's gate, which then wrote a new
    block and left the old one as text without remembering its seal; the writer deleted
    quantgate's blocks, put the old tag back, and the next gate rewrote a person's verbatim copy."""
    model, client = "adv46-forget", MlflowClient()
    version = _fresh(model, trivial)
    args = ("promote", "--version", version, "--model-name", model, "--thresholds", _yaml(tmp_path, LENIENT))
    assert _quantgate(*args).exit_code == 0
    mv = client.get_model_version(model, version)
    old_block, old_tag = mv.description, mv.tags["description_block_sha256"]
    quote = "Ann (reviewer), for the audit:\n" + old_block + "\nAnn: end of quote."
    client.update_model_version(model, version, description=old_block + "\n\n" + quote)
    client.delete_model_version_tag(model, version, "description_block_sha256")
    assert _quantgate(*args).exit_code == 0  # a new block; the old one and the copy stay as text
    client.update_model_version(model, version, description=quote)  # quantgate's blocks removed
    client.set_model_version_tag(model, version, "description_block_sha256", old_tag)
    assert _quantgate(*args).exit_code == 0
    after = client.get_model_version(model, version).description
    assert after.startswith(quote), after
