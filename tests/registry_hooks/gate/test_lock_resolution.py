"""Which promotion lock a gate takes (the choice is pure and needs no server), and the file lock
itself: one holder at a time."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flows.errors import UserError
from flows.promote import choose_lock
from registry_hooks.gate.lock import (
    LockTimeout,
    default_lock_path,
    describe_lock,
    is_pg_uri,
    libpq_uri,
    promotion_lock,
    resolve_lock,
)

PG = "postgresql://quantgate:s3cret@127.0.0.1:5432/mlflow"


def test_a_tracking_server_gets_the_advisory_lock_it_is_given(tmp_path):
    assert resolve_lock("http://127.0.0.1:5000", lock_uri=PG) == PG
    # --lock-uri wins over --lock-file: only it holds across machines
    assert resolve_lock("http://127.0.0.1:5000", lock_uri=PG, lock_file=str(tmp_path / "x.lock")) == PG
    assert resolve_lock("http://127.0.0.1:5000", lock_uri=PG, no_lock=True) is None


def test_a_database_registry_locks_itself_and_sqlite_keeps_its_file(tmp_path):
    assert resolve_lock("postgresql+psycopg://u:p@db:5432/mlflow") == "postgresql+psycopg://u:p@db:5432/mlflow"
    assert resolve_lock(f"sqlite:///{tmp_path}/mlflow.db") == tmp_path / "mlflow.db.promote.lock"
    assert resolve_lock("http://127.0.0.1:5000", lock_file="/shared/gate.lock") == Path("/shared/gate.lock")


def test_no_lock_for_a_server_warns_once_and_names_the_fix():
    said = []
    assert resolve_lock("http://127.0.0.1:5000", warn=said.append) is None
    assert len(said) == 1 and "--lock-uri" in said[0] and "http://127.0.0.1:5000" in said[0]


def test_a_lock_uri_that_is_not_postgresql_is_a_user_error():
    with pytest.raises(UserError, match="must be a postgresql:// URI, got mysql://"):
        resolve_lock("http://127.0.0.1:5000", lock_uri="mysql://u@db/x")


def test_uris_are_normalised_for_libpq_and_never_printed_with_the_password():
    assert is_pg_uri(PG) and is_pg_uri("postgresql+psycopg2://h/db") and not is_pg_uri("sqlite:///x.db")
    assert not is_pg_uri(Path("postgresql://x"))  # a lock file path is never a database
    assert libpq_uri("postgresql+psycopg://u@h/db") == "postgresql://u@h/db"
    text = describe_lock(PG)
    assert "s3cret" not in text and "127.0.0.1:5432/mlflow" in text


# ---------------------------------------------------------------- the promotion lock
def test_the_default_lock_lies_beside_a_sqlite_registry_and_nowhere_else(tmp_path):
    assert default_lock_path(f"sqlite:///{tmp_path}/mlflow.db") == tmp_path / "mlflow.db.promote.lock"
    assert default_lock_path("sqlite:///:memory:") is None
    assert default_lock_path("http://127.0.0.1:5000") is None
    assert default_lock_path("postgresql://u@db/mlflow") is None


def test_a_registry_without_a_default_lock_is_promoted_unlocked_with_a_warning(tmp_path, capsys):
    assert choose_lock("http://127.0.0.1:5000", None, False) is None
    assert "no promotion lock for registry 'http://127.0.0.1:5000'" in capsys.readouterr().err
    assert choose_lock("http://127.0.0.1:5000", str(tmp_path / "gate.lock"), False) == tmp_path / "gate.lock"
    assert choose_lock(f"sqlite:///{tmp_path}/mlflow.db", None, True) is None
    assert capsys.readouterr().err == ""


def test_the_lock_excludes_a_second_holder_until_released(tmp_path):
    path = tmp_path / "x.lock"
    with promotion_lock(path):
        with pytest.raises(LockTimeout, match="still held after 0.1s by pid"):
            with promotion_lock(path, timeout_s=0.1):
                pass
    with promotion_lock(path, timeout_s=0.1):  # free again
        pass


def test_a_file_renamed_over_a_held_lock_file_does_not_let_a_second_gate_in(tmp_path):
    """The thirty-eighth adversarial run renamed a fresh file over the lock file whenever it was
    held (a rename needs only write access to the folder, the store's), and up to three gates
    held "the" lock at once: each locked a different file."""
    path = tmp_path / "mlflow.db.promote.lock"
    with promotion_lock(path):
        fresh = tmp_path / "fresh"
        fresh.write_text("", encoding="utf-8")
        os.replace(fresh, path)
        with pytest.raises(LockTimeout, match="still held after 0.1s"):
            with promotion_lock(path, timeout_s=0.1):
                pass
    with promotion_lock(path, timeout_s=0.1):  # free again
        pass
