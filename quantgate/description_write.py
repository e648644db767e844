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
from mlflow.store.model_registry.dbmodels.models import SqlModelVersion, SqlModelVersionTag
from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore
from mlflow.utils.time import get_current_time_millis
from sqlalchemy import collate, or_

from quantgate.block_memory import remember_superseded, superseded

ATTEMPTS = 5
# Byte-for-byte comparison per database, whatever collation the column has: a store writer who
# gave the sqlite column NOCASE (the fortieth adversarial run, by editing the schema) had a person's
# case-only save compare equal to what quantgate read, and quantgate's write replaced it.
BYTEWISE = {"sqlite": "BINARY", "postgresql": "C"}


def write_if_unchanged(
    client: MlflowClient, name: str, version: str, expected: str | None, new: str, tag: tuple[str, str] | None = None
) -> bool:
    """Set the description to ``new`` only if it is still ``expected``, and with it the version
    tag ``tag`` (key, value); True when written. On a SQL store both change in one transaction,
    or neither does. Over HTTP the tag is written first (see :func:`update_description`)."""
    store = client._get_registry_client().store  # the client's own store: same URI, same workspace
    if isinstance(store, SqlAlchemyStore):
        with store.ManagedSessionMaker(read_only=False) as session:  # a write: never to a read replica
            exact = BYTEWISE.get(store.db_type)  # whatever collation the column was given
            stored = collate(SqlModelVersion.description, exact) if exact else SqlModelVersion.description
            query = store._get_query(session, SqlModelVersion).filter(
                SqlModelVersion.name == name,
                SqlModelVersion.version == int(version),
                or_(SqlModelVersion.description.is_(None), stored == "")
                if not expected  # MLflow shows a NULL description as None or ""
                else stored == expected,
            )
            changed = query.update(
                {SqlModelVersion.description: new, SqlModelVersion.last_updated_time: get_current_time_millis()},
                synchronize_session=False,
            )
            if changed == 1 and tag is not None:
                row = store._get_sql_model_version(session, name, version)
                key, value = tag
                session.merge(
                    SqlModelVersionTag(workspace=row.workspace, name=name, version=int(version), key=key, value=value)
                )
        return changed == 1
    if tag is not None:
        client.set_model_version_tag(name, version, *tag)
    if (client.get_model_version(name, version).description or "") != (expected or ""):
        return False
    client.update_model_version(name, version, description=new)
    return True


def update_description(
    client: MlflowClient,
    name: str,
    version: str,
    build: Callable[[str | None, str | None], tuple[str, str]],
    tag: str,
    seals: Callable[[str | None], list[str]] = lambda description: [],
) -> bool:
    """Read the description and the version tag ``tag`` naming the block quantgate wrote last,
    ``build`` the new description from both (returns description and block tag), and write the
    two if nobody changed the description meanwhile; else read both again and rebuild. False when
    it kept changing for :data:`ATTEMPTS` tries (nothing of anyone's is lost: quantgate's block
    is simply not written this time).

    On a SQL store the description and its tag are written in one transaction: another quantgate
    command's write in between (an evaluation's card while the gate writes its note) is found on
    the next try by its own tag. Written one after the other, as over HTTP, the tag comes first:
    a write stopped in between leaves a tag naming no block (so the next write adds one), never
    an older tag beside a newer block (which a person's quote of the older one could match); and
    there a quantgate write landing in between leaves its block as text (the thirty-seventh
    adversarial run found the tag read once and kept across tries, which did that on every store).
    A tag naming a block this machine has replaced (:mod:`quantgate.block_memory`) names none.
    Replaced are the block the tag named and every other pair of the version's in the text it
    read (``seals``: their seals): the forty-sixth adversarial run deleted the tag before a
    write, so that the block it then left as text was never remembered, deleted quantgate's
    blocks afterwards and put the tag back to the seal of a person's verbatim copy of that one."""
    for _ in range(ATTEMPTS):
        mv = client.get_model_version(name, version)
        own = mv.tags.get(tag)
        if superseded(own):  # a tag put back to a block this machine replaced names no block
            own = None
        description, block = build(mv.description, own)
        if write_if_unchanged(client, name, str(version), mv.description, description, (tag, block)):
            for replaced in dict.fromkeys([own, *seals(mv.description)]):
                if replaced != block:
                    remember_superseded(replaced)
            return True
    return False
