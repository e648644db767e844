"""Writing a version's description without losing a person's save that lands meanwhile.

MLflow's API has no compare-and-set: ``update_model_version`` writes the whole description, so
a person's save between quantgate's read and its write was lost (the eighteenth adversarial run,
timing saves on quantgate's tag write, lost 5 of 56). On a SQL store (sqlite, PostgreSQL, MySQL)
the write here is one ``UPDATE ... WHERE description = <what was read>``, made through MLflow's
own store, session and ORM model (so its schema, workspaces included, stays MLflow's): it
changes nothing if the description changed since it was read, and the caller reads it again and
rebuilds. A tracking server over HTTP offers no such statement: there the description is read
again right before the write, which narrows the window to one request but cannot close it.
"""

from __future__ import annotations

from collections.abc import Callable

from mlflow import MlflowClient
from mlflow.store.model_registry.dbmodels.models import SqlModelVersion
from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore
from mlflow.utils.time import get_current_time_millis
from sqlalchemy import or_

ATTEMPTS = 5


def write_if_unchanged(client: MlflowClient, name: str, version: str, expected: str | None, new: str) -> bool:
    """Set the description to ``new`` only if it is still ``expected``; True when written."""
    store = client._get_registry_client().store  # the client's own store: same URI, same workspace
    if isinstance(store, SqlAlchemyStore):
        with store.ManagedSessionMaker() as session:
            query = store._get_query(session, SqlModelVersion).filter(
                SqlModelVersion.name == name,
                SqlModelVersion.version == int(version),
                or_(SqlModelVersion.description.is_(None), SqlModelVersion.description == "")
                if not expected  # MLflow shows a NULL description as None or ""
                else SqlModelVersion.description == expected,
            )
            changed = query.update(
                {SqlModelVersion.description: new, SqlModelVersion.last_updated_time: get_current_time_millis()},
                synchronize_session=False,
            )
        return changed == 1
    if (client.get_model_version(name, version).description or "") != (expected or ""):
        return False
    client.update_model_version(name, version, description=new)
    return True


def update_description(
    client: MlflowClient, name: str, version: str, build: Callable[[str | None], tuple[str, str]], write_tag
) -> bool:
    """Read the description, ``build`` the new one from it (returns description and block tag),
    write the tag (``write_tag``, before the description: see flows.evaluate.record_on_version),
    then the description if nobody changed it meanwhile; else read again and rebuild. False when
    it kept changing for :data:`ATTEMPTS` tries (nothing of anyone's is lost: quantgate's block
    is simply not written this time)."""
    for _ in range(ATTEMPTS):
        current = client.get_model_version(name, version).description
        description, block = build(current)
        write_tag(block)
        if write_if_unchanged(client, name, str(version), current, description):
            return True
    return False
