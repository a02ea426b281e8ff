"""Session store: typed manifest, atomic writes, crash safety, corrupt manifests, garbage collection."""

import json
import os
import re
from pathlib import Path

import pytest
import torch

from core.errors import WorkbenchError
from core.pruning.plan import SparsityPlan
from core.session.listing import list_sessions
from core.session.manifest import FORMAT, Manifest, SumsRecord
from core.session.store import Session

ROOT = Path(__file__).resolve().parent.parent


def test_create_open_and_list(tmp_path):
    s = Session.create(tmp_path, "alpha")
    with s.edit() as m:
        m.plan = SparsityPlan(0.5, [("model.layers.0.*", 0.2)], "global")
    again = Session.open(tmp_path, "alpha")
    assert again.manifest.plan == SparsityPlan(0.5, [("model.layers.0.*", 0.2)], "global")
    assert again.manifest.format == FORMAT and "torch" in again.manifest.versions
    rows = list_sessions(tmp_path)
    assert [r["name"] for r in rows] == ["alpha"] and rows[0]["bytes"] > 0


def test_unknown_session_and_bad_names(tmp_path):
    Session.create(tmp_path, "known")
    with pytest.raises(WorkbenchError, match=r"no session 'nope'.*known"):
        Session.open(tmp_path, "nope")
    with pytest.raises(WorkbenchError, match="session name"):
        Session.create(tmp_path, "../escape")


@pytest.mark.parametrize("text", ["{ not json", '{"format": 2, "name": 5}', '["a list"]', '{"format": 2, "name": "x", "created": "", "plan": {"default": 7}}'])
def test_corrupt_manifest_is_reported(tmp_path, text):
    s = Session.create(tmp_path, "broken")
    (s.path / "manifest.json").write_text(text)
    with pytest.raises(WorkbenchError, match="corrupt manifest") as err:
        Session.open(tmp_path, "broken")
    assert "\n" not in str(err.value)
    assert list_sessions(tmp_path)[0]["updated"] == "corrupt manifest"


def test_newer_format_is_refused(tmp_path):
    s = Session.create(tmp_path, "future")
    data = json.loads((s.path / "manifest.json").read_text())
    data["format"] = FORMAT + 1
    (s.path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(WorkbenchError, match="newer LRP Workbench"):
        Session.open(tmp_path, "future")


def test_tensor_files_get_new_names_and_old_ones_are_collected(tmp_path):
    s = Session.create(tmp_path, "t")
    first = s.write_tensors("sums-reference", {"a": torch.ones(3)})
    with s.edit() as m:
        m.sums["reference"] = SumsRecord(file=first, samples=1, tokens=3, key={})
    second = s.write_tensors("sums-reference", {"a": torch.zeros(3)})
    assert first != second
    assert (s.path / first).exists() and (s.path / second).exists()  # nothing deleted before the manifest moves
    with s.edit() as m:
        m.sums["reference"].file = second
    assert not (s.path / first).exists()
    assert torch.equal(s.read_tensors(second)["a"], torch.zeros(3))


def test_killed_writer_leaves_last_good_state(tmp_path):
    s = Session.create(tmp_path, "crash")
    good = s.write_tensors("sums-reference", {"m": torch.ones(4)})
    with s.edit() as m:
        m.sums["reference"] = SumsRecord(file=good, samples=2, tokens=8, key={})
    # A writer killed mid-way leaves a temp file and a new, unreferenced tensor file.
    (s.path / ".manifest.json.123.tmp").write_text('{"format": 2, "half')
    (s.path / "sums-reference-0099.safetensors").write_bytes(b"\x00\x01partial")
    reopened = Session.open(tmp_path, "crash")
    assert reopened.manifest.sums["reference"].samples == 2
    assert torch.equal(reopened.read_tensors(good)["m"], torch.ones(4))
    reopened.save()
    assert not (s.path / "sums-reference-0099.safetensors").exists()


def test_manifest_write_is_atomic_under_failure(tmp_path, monkeypatch):
    s = Session.create(tmp_path, "atomic")
    with s.edit() as m:
        m.plan = SparsityPlan(0.1)
    before = (s.path / "manifest.json").read_text()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        with s.edit() as m:
            m.plan = SparsityPlan(0.9)
    assert (s.path / "manifest.json").read_text() == before
    assert json.loads(before)["plan"]["default"] == 0.1
    assert not list(s.path.glob(".*.tmp"))


def test_every_manifest_field_has_a_docstring_and_is_documented():
    readme = (ROOT / "sessions" / "README.md").read_text()
    documented = set(re.findall(r"`([a-z_]+)`", readme))
    missing_doc = [n for n, f in Manifest.model_fields.items() if not f.description]
    assert missing_doc == []
    assert sorted(set(Manifest.model_fields) - documented) == []
