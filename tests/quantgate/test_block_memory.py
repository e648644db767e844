"""This machine's memory of replaced description blocks: per version, appended, and a memory
that cannot be written costs the defence, never the description."""

from __future__ import annotations

from quantgate.block_memory import STATE_DIR_ENV, memory_file, remember_superseded, superseded


def test_a_replaced_seal_is_remembered(tmp_path, monkeypatch):
    monkeypatch.setenv(STATE_DIR_ENV, str(tmp_path / "state"))
    assert not superseded("hmac-sha256:k:1")
    remember_superseded("hmac-sha256:k:1")
    remember_superseded("hmac-sha256:k:2")
    assert superseded("hmac-sha256:k:1") and superseded("hmac-sha256:k:2")
    assert not superseded("hmac-sha256:k:3") and not superseded(None) and not superseded("hmac-sha256:k:")
    assert oct(memory_file().stat().st_mode & 0o777) == "0o600"
    assert oct(memory_file().parent.stat().st_mode & 0o777) == "0o700"


def test_a_memory_that_cannot_be_written_warns_and_goes_on(tmp_path, monkeypatch, capsys):
    blocked = tmp_path / "file"
    blocked.write_text("")
    monkeypatch.setenv(STATE_DIR_ENV, str(blocked / "state"))  # a folder under a file: cannot be made
    remember_superseded("hmac-sha256:k:1")
    assert "cannot remember the replaced description block" in capsys.readouterr().err
    assert not superseded("hmac-sha256:k:1")
