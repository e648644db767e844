"""This machine's memory of replaced description blocks: per version, appended, and a memory
that cannot be written costs the defence, never the description."""

from __future__ import annotations

from quantgate.block_memory import STATE_DIR_ENV, memory_file, remember_superseded, superseded


def _seal(n: int) -> str:
    return f"hmac-sha256:{'a' * 12}:{n:064x}"


def test_a_replaced_seal_is_remembered(tmp_path, monkeypatch):
    monkeypatch.setenv(STATE_DIR_ENV, str(tmp_path / "state"))
    assert not superseded(_seal(1))
    remember_superseded(_seal(1))
    remember_superseded(_seal(2))
    assert superseded(_seal(1)) and superseded(_seal(2))
    assert not superseded(_seal(3)) and not superseded(None) and not superseded(_seal(1)[:-1])
    assert oct(memory_file().stat().st_mode & 0o777) == "0o600"
    assert oct(memory_file().parent.stat().st_mode & 0o777) == "0o700"


def test_a_memory_that_cannot_be_written_warns_and_goes_on(tmp_path, monkeypatch, capsys):
    blocked = tmp_path / "file"
    blocked.write_text("")
    monkeypatch.setenv(STATE_DIR_ENV, str(blocked / "state"))  # a folder under a file: cannot be made
    remember_superseded(_seal(1))
    assert "cannot remember the replaced description block" in capsys.readouterr().err
    assert not superseded(_seal(1))


def test_text_that_is_no_seal_is_not_remembered(tmp_path, monkeypatch):
    monkeypatch.setenv(STATE_DIR_ENV, str(tmp_path / "state"))
    remember_superseded("x" * 64)  # a tag a writer set: it names no block
    remember_superseded("a" * 64)
    assert memory_file().read_text() == "a" * 64 + "\n"


def test_a_memory_written_over_counts_every_seal_as_replaced_and_says_so(tmp_path, monkeypatch, capsys):
    # the forty-eighth adversarial run: ONNX Runtime's session file written over the memory
    monkeypatch.setenv(STATE_DIR_ENV, str(tmp_path / "state"))
    remember_superseded(_seal(1))
    memory_file().write_text("1796520160540\n84e3a2c3-ea9a-292e-edce-1fa19e662be5\n")
    assert superseded(_seal(2)) and superseded("b" * 64)
    assert "holds lines that are no description-block seal" in capsys.readouterr().err
    assert not superseded(None)
