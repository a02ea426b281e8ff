"""Session names, readers racing a writer, read-only storage, nothing left lying (items 1, 7, 8, 14)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import core.engine
from core.session.store import Session
from faults_support import ROOT, one_line, scored, snapshot


# ---- 1. a session name is a name -----------------------------------------------------------------
BAD_NAMES = ["../victim", "{victim}", "a" * 300, "", ".hidden", "x/../../victim"]
COMMANDS = [
    ["session", "show", "{name}"],
    ["session", "delete", "{name}", "--yes"],
    ["prune", "--session", "{name}", "--sparsity", "0.1"],
    ["eval", "--session", "{name}", "--metrics", "perplexity"],
    ["generate", "--session", "{name}", "--max-new-tokens", "2"],
    ["export", "--session", "{name}", "--out", "{out}"],
    ["score", "--session", "{name}", "--samples", "2"],
]


@pytest.fixture
def victim(invoke, tiny_model_dir, tmp_path):
    """A real session, moved outside the store, with a file of the user's beside its manifest."""
    scored(invoke, tiny_model_dir, "v")
    invoke("prune", "--session", "v", "--sparsity", "0.3")
    folder = tmp_path / "victim"
    shutil.move(str(tmp_path / "store" / "v"), folder)
    (folder / "precious.safetensors").write_bytes(b"the user's own file")
    return folder


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_a_session_name_never_reaches_outside_the_store(invoke, victim, tmp_path, args):
    before = snapshot(victim)
    for name in BAD_NAMES:
        name = name.format(victim=victim)
        one_line(invoke(*[a.format(name=name, out=tmp_path / "out") for a in args], ok=False), "session name")
        assert snapshot(victim) == before, name
    link = tmp_path / "store" / "link"
    link.symlink_to(victim, target_is_directory=True)
    one_line(invoke(*[a.format(name="link", out=tmp_path / "out") for a in args], ok=False), "link out of the session store")
    assert snapshot(victim) == before and not (tmp_path / "out").exists()


# ---- 7. a reader keeps the files of the manifest it read ------------------------------------------------
def test_a_reader_keeps_its_files_while_a_writer_replaces_them(invoke, tiny_model_dir, tmp_path, monkeypatch):
    scored(invoke, tiny_model_dir)
    invoke("prune", "--session", "s", "--sparsity", "0.3")
    store = tmp_path / "store"
    import core.session.store as st

    real = st.acquire

    def busy(path):
        raise st.SessionBusy("held by another process")

    monkeypatch.setattr(st, "acquire", busy)
    reader = Session.open(store, "s", mode="read")
    monkeypatch.setattr(st, "acquire", real)
    assert reader.read_only
    old_counts, old_ranking = reader.manifest.counts.file, reader.manifest.ranking.file
    expected = Session.open(store, "s", mode="read").read_tensors(old_counts)
    invoke("prune", "--session", "s", "--sparsity", "0.6")  # new counts; the old file is removed
    invoke("score", "--session", "s", "--seed", "3")  # a new ranking; the old file is removed
    assert not (store / "s" / old_counts).exists() and not (store / "s" / old_ranking).exists()
    got = reader.read_tensors(old_counts)
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    wb = core.engine.Workbench(reader)
    wb.ensure_model()
    assert wb.prune_summary().sparsity == pytest.approx(0.3, abs=0.02)  # the plan it read, from the files it read


# ---- 8. read-only storage ----------------------------------------------------------------------------
def test_read_only_storage_serves_the_read_only_commands(invoke, tiny_model_dir, tmp_path, monkeypatch):
    scored(invoke, tiny_model_dir)
    invoke("prune", "--session", "s", "--sparsity", "0.3")
    folder = tmp_path / "store" / "s"
    before = snapshot(folder)
    import core.session.lock as lock

    real = os.access
    monkeypatch.setattr(lock.os, "access", lambda p, mode: False if Path(p) == folder else real(p, mode))
    assert '"name": "s"' in invoke("session", "show", "s").stdout
    res = invoke("eval", "--session", "s", "--metrics", "perplexity")
    assert "opened read-only" in res.stderr and "cannot be written" in res.stderr
    invoke("export", "--session", "s", "--out", str(tmp_path / "model"))
    one_line(invoke("prune", "--session", "s", "--sparsity", "0.5", ok=False), "cannot be written")
    assert snapshot(folder) == before


def test_a_lock_that_is_a_folder_is_one_line(invoke, tiny_model_dir, tmp_path):
    scored(invoke, tiny_model_dir)
    lock = tmp_path / "store" / "s" / ".lock"
    lock.unlink()
    lock.mkdir()
    one_line(invoke("prune", "--session", "s", "--sparsity", "0.3", ok=False), "is a folder")


# ---- 14. nothing left lying --------------------------------------------------------------------------
def test_nothing_is_left_behind(invoke, tiny_model_dir, tmp_path):
    missing = tmp_path / "nothing.txt"
    one_line(invoke("score", "--session", "first", "--model", str(tiny_model_dir), "--reference", str(missing), ok=False),
             "not found")
    assert "no sessions" in invoke("session", "list").stdout
    scored(invoke, tiny_model_dir)
    folder = tmp_path / "store" / "s"
    stale = folder / ".ranking-0009.safetensors.abc123.tmp"
    stale.write_bytes(b"\0" * 500_000)  # a killed writer's half file
    row = json.loads(invoke("session", "list", "--json").stdout)[0]
    assert row["bytes"] < sum(f.stat().st_size for f in folder.iterdir())  # not counted as the session's
    invoke("eval", "--session", "s", "--metrics", "perplexity")  # the next lock holder removes it
    assert not stale.exists()


def test_a_reader_never_removes_temporaries(tmp_path):
    s = Session.create(tmp_path, "t")
    stale = tmp_path / "t" / ".counts-0001.safetensors.x.tmp"
    stale.write_bytes(b"x")
    code = ("import sys; from pathlib import Path; from core.session.store import Session; "
            "s = Session.open(Path(sys.argv[1]), 't', mode='read'); print(s.read_only)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "True", out.stderr
    assert stale.exists()  # the writer (this process) may still be writing it
    s.close()
    proc = subprocess.Popen([sys.executable, "-c", code.replace("mode='read'", "mode='write'"), str(tmp_path)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    assert proc.communicate(timeout=120)[0].strip() == "False"
    assert not stale.exists()
    assert proc.returncode != -signal.SIGKILL
