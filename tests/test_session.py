"""Session store: atomic writes, crash safety, corrupt manifests, garbage collection."""

import json
import os

import pytest
import torch

from core.errors import WorkbenchError
from core.session import Session, list_sessions


def test_create_open_and_list(tmp_path):
    s = Session.create(tmp_path, "alpha")
    s.manifest["plan"] = {"default": 0.5}
    s.save()
    again = Session.open(tmp_path, "alpha")
    assert again.manifest["plan"] == {"default": 0.5}
    assert "torch" in again.manifest["versions"]
    assert list_sessions(tmp_path) == ["alpha"]


def test_unknown_session_and_bad_names(tmp_path):
    Session.create(tmp_path, "known")
    with pytest.raises(WorkbenchError, match=r"no session 'nope'.*known"):
        Session.open(tmp_path, "nope")
    with pytest.raises(WorkbenchError, match="session name"):
        Session.create(tmp_path, "../escape")


def test_corrupt_manifest_is_reported(tmp_path):
    s = Session.create(tmp_path, "broken")
    (s.path / "manifest.json").write_text("{ not json")
    with pytest.raises(WorkbenchError, match="corrupt manifest"):
        Session.open(tmp_path, "broken")


def test_tensor_files_get_new_names_and_old_ones_are_collected(tmp_path):
    s = Session.create(tmp_path, "t")
    first = s.write_tensors("scores-reference", {"a": torch.ones(3)})
    s.manifest["scores"] = {"reference": {"file": first}}
    s.save()
    second = s.write_tensors("scores-reference", {"a": torch.zeros(3)})
    assert first != second
    assert (s.path / first).exists() and (s.path / second).exists()  # nothing deleted before the manifest moves
    s.manifest["scores"] = {"reference": {"file": second}}
    s.save()
    assert not (s.path / first).exists()
    assert torch.equal(s.read_tensors(second)["a"], torch.zeros(3))


def test_killed_writer_leaves_last_good_state(tmp_path):
    s = Session.create(tmp_path, "crash")
    good = s.write_tensors("masks", {"m": torch.ones(4, dtype=torch.uint8)})
    s.manifest["masks"] = {"file": good, "sparsity": 0.25}
    s.save()
    # A writer killed mid-way leaves a temp file and a new, unreferenced tensor file.
    (s.path / ".manifest.json.123.tmp").write_text('{"format": 1, "half')
    (s.path / "masks-0099.safetensors").write_bytes(b"\x00\x01partial")
    reopened = Session.open(tmp_path, "crash")
    assert reopened.manifest["masks"]["sparsity"] == 0.25
    assert torch.equal(reopened.read_tensors(good)["m"], torch.ones(4, dtype=torch.uint8))
    reopened.save()
    assert not (s.path / "masks-0099.safetensors").exists()


def test_manifest_write_is_atomic_under_failure(tmp_path, monkeypatch):
    s = Session.create(tmp_path, "atomic")
    s.manifest["plan"] = {"default": 0.1}
    s.save()
    before = (s.path / "manifest.json").read_text()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    s.manifest["plan"] = {"default": 0.9}
    with pytest.raises(OSError):
        s.save()
    assert (s.path / "manifest.json").read_text() == before
    assert json.loads(before)["plan"] == {"default": 0.1}
    assert not list(s.path.glob(".*.tmp"))
