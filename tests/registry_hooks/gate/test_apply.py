"""The gate's last look at a version, under the lock, before the alias moves."""

from __future__ import annotations

from mlflow import MlflowClient

from registry_hooks.gate.apply import recheck
from registry_hooks.gate.decision import Decision
from registry_hooks.gate.evidence import SNAPSHOT_TAGS, Evidence
from registry_hooks.gate.verdict import Verdict


def test_a_version_registered_again_with_its_tags_copied_is_not_what_was_judged(store, tmp_path):
    """The seventeenth run: while the gate read the predictions table, the attacker deleted the
    model and registered the version again (other files, every tag copied); the last check
    compared tags only, and the alias moved onto the new version."""
    client, name = MlflowClient(), "adv17-recheck"
    (tmp_path / "model").mkdir()
    tags = {"eval_status": "complete", "eval_run_id": "r1", "manifest_sha256": "a" * 64}
    client.create_registered_model(name)
    judged = client.create_model_version(name, str(tmp_path / "model"), tags=tags)
    verdict = Verdict(judged, Decision(True, ()), Evidence(snapshot={k: judged.tags.get(k) for k in SNAPSHOT_TAGS}))
    assert not any("changed while it was being gated" in p for p in recheck(client, verdict, None))
    client.delete_registered_model(name)
    client.create_registered_model(name)
    again = client.create_model_version(name, str(tmp_path / "model"), tags=tags)
    assert again.version == judged.version and again.tags == judged.tags
    problems = recheck(client, verdict, None)
    assert problems and "registered again" in problems[0], problems
