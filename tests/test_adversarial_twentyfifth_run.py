"""Issue 17, the twenty-fifth adversarial run: the trust check on data a tag names looked at a
path, and the loader opened the same path again later. A store writer's link in /tmp showed the
check the bundled dataset and the loader the writer's folder: the keyed rebuild calibrated on the
writer's data and signed it, and `evaluate --dataset auto` judged a variant on texts the writer
picked (or copied a file only the key holder could read into the store). Now what was checked is
what is loaded: every link resolved once, an inline label list kept as a list."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
from mlflow import MlflowClient
from test_adversarial import _quantgate  # noqa: F401
from test_adversarial_signed import COPY, KEY, signed  # noqa: F401

from quantgate.data import NEWS9_DIR, dataset_digest, load_dataset, news9_labels, pin_tagged_data


def _repoint(link: Path, target: Path) -> None:
    """Point ``link`` at ``target`` in one step, as the run's attacker did (a new link renamed over it)."""
    fresh = link.with_name(link.name + ".new")
    fresh.unlink(missing_ok=True)
    fresh.symlink_to(target)
    os.replace(fresh, link)


def _writers_copy(tmp_path: Path, name: str, split: str) -> Path:
    """news9 with one split's texts replaced by the writer's own."""
    folder = tmp_path / name
    shutil.copytree(NEWS9_DIR, folder)
    frame = pd.read_csv(folder / f"{split}.csv")
    frame["text"] = [f"writer's text number {i} {label}" for i, label in enumerate(frame["label"])]
    frame.to_csv(folder / f"{split}.csv", index=False)
    return folder


def test_data_a_tag_names_is_loaded_from_where_it_was_checked(tmp_path, monkeypatch):
    """Cases 3-5 of the run, without the timing: the check passes a link to the bundled news9,
    the writer repoints it at a folder whose test split holds the texts they chose, and the
    loader must still read news9."""
    writer = _writers_copy(tmp_path, "cherry", "test")
    link = tmp_path / "td"
    link.symlink_to(NEWS9_DIR)
    pinned = pin_tagged_data(str(link), "", [])
    assert pinned.untrusted is None, pinned  # it is news9 when checked
    _repoint(link, writer)
    assert dataset_digest(load_dataset(str(link))) != dataset_digest(load_dataset("news9"))  # the swap is real
    loaded = load_dataset(pinned.dataset, labels=pinned.labels)
    assert dataset_digest(loaded) == dataset_digest(load_dataset("news9"))


def test_a_names_file_and_an_inline_list_are_read_as_they_were_checked(tmp_path, monkeypatch):
    """The same for the `labels` option: a names file through a link, and an inline `a,b,c`
    that a file of the same name, made after the check, would otherwise replace."""
    names = list(news9_labels())
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    (trusted / "labels.txt").write_text("\n".join(names) + "\n")
    link = tmp_path / "names.txt"
    link.symlink_to(trusted / "labels.txt")
    pinned = pin_tagged_data("news9", str(link), [str(trusted)])
    assert pinned.untrusted is None, pinned
    writers = tmp_path / "writers-names.txt"
    writers.write_text("\n".join(reversed(names)) + "\n")
    _repoint(link, writers)
    assert load_dataset(pinned.dataset, labels=pinned.labels).labels == tuple(names)

    monkeypatch.chdir(tmp_path)
    inline = ",".join(names)
    pinned = pin_tagged_data("news9", inline, [])
    assert pinned.untrusted is None and pinned.labels == names, pinned
    later = tmp_path / inline  # made after the check ("Sci/Tech" makes it a file in a folder)
    later.parent.mkdir(parents=True, exist_ok=True)
    later.write_text("\n".join(reversed(names)) + "\n")
    assert load_dataset("news9", labels=inline).labels != tuple(names)  # the file would win
    assert load_dataset(pinned.dataset, labels=pinned.labels).labels == tuple(names)


def test_a_link_repointed_during_the_keyed_rebuild_does_not_choose_the_calibration_data(
    signed,  # noqa: F811
    monkeypatch,
    tmp_path,
):
    """Case 1 of the run, as it was done. The writer quantises a static INT8 variant calibrated on
    their own data through a link, then points the link at bundled news9, so the key holder's
    check passes, and back at their data when the rebuild's temporary folder appears. Before: the
    rebuild calibrated on the writer's data, matched the writer's file byte for byte, and the
    evaluation was signed (rc 0), then promoted and served. Now the rebuild reads the data it
    checked, builds another file, and nothing is measured."""
    monkeypatch.delenv("QUANTGATE_EVIDENCE_KEY", raising=False)
    monkeypatch.delenv("QUANTGATE_TRUSTED_DATA", raising=False)
    writer = _writers_copy(tmp_path, "evilcal", "train")
    link = tmp_path / "cal"
    link.symlink_to(writer)
    built = _quantgate(
        "quantise", "--runtime", "onnxruntime", "--recipe", "onnx-int8-static", "--source", signed["fp32"],
        "--model-name", COPY, "--set", f"onnx-int8-static.calibration_dataset={link}",
        "--set", "onnx-int8-static.calibration_size=16",
    )  # fmt: skip
    assert built.exit_code == 0, built.output
    client = MlflowClient()
    mv = max(
        client.search_model_versions(f"name='{COPY}' and tags.variant='onnx-int8-static'"), key=lambda v: int(v.version)
    )
    assert json.loads(mv.tags["recipe"])["calibration_dataset"] == str(link)

    _repoint(link, NEWS9_DIR)  # what the key holder's check will see
    swapped = threading.Event()
    stop = threading.Event()
    root = Path(tempfile.gettempdir())
    before = set(root.glob("quantgate-rebuild-*"))

    def watch():
        while not stop.is_set():
            if set(root.glob("quantgate-rebuild-*")) - before:
                _repoint(link, writer)
                swapped.set()
                return
            time.sleep(0.005)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        monkeypatch.setenv("QUANTGATE_EVIDENCE_KEY", KEY)
        result = _quantgate("evaluate", "--version", mv.version, "--model-name", COPY, "--latency-runs", "5")
    finally:
        stop.set()
        watcher.join()
        client.delete_model_version(COPY, mv.version)
    assert swapped.is_set(), "the rebuild never started: the race was not run"
    assert result.exit_code != 0, result.output
    assert "is not what its recipe (onnx-int8-static) builds" in result.output, result.output


def test_the_key_is_blanked_out_of_a_one_line_error(monkeypatch):
    """Case 2 of the run: the store's copy of an error quoting the key was redacted, the key
    holder's terminal (and so any CI log or journal) got the key in full."""
    from flows.errors import one_line

    monkeypatch.setenv("QUANTGATE_EVIDENCE_KEY", KEY)
    assert one_line(f"found ['{KEY}']\n in train.csv") == "found ['[evidence key]'] in train.csv"
