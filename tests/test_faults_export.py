"""Export: only its own dead temporaries, only earlier exports replaced, sparsity from the masks, the umask (items 3, 6, 14)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from safetensors import safe_open

from faults_support import one_line, scored


# ---- 3. export removes only its own dead temporaries, and refuses folders that are not exports ---------
def test_export_touches_only_what_is_its_own(invoke, tiny_model_dir, tmp_path):
    scored(invoke, tiny_model_dir)
    invoke("prune", "--session", "s", "--sparsity", "0.3")
    out = tmp_path / "x" / "model"
    backup = tmp_path / "x" / ".model.backup"
    backup.mkdir(parents=True)
    (backup / "keep.txt").write_text("mine")
    live = tmp_path / "x" / ".model.live"  # another export under way: its writer is this very process
    live.mkdir()
    (live / ".workbench-export.json").write_text(json.dumps({"pid": os.getpid(), "host": os.uname().nodename}))
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = tmp_path / "x" / ".model.dead"
    dead.mkdir()
    (dead / ".workbench-export.json").write_text(json.dumps({"pid": int(gone.stdout), "host": os.uname().nodename}))
    invoke("export", "--session", "s", "--out", str(out))
    assert (backup / "keep.txt").read_text() == "mine" and live.is_dir() and not dead.exists()
    assert (out / "pruning.json").is_file()
    one_line(invoke("export", "--session", "s", "--out", ".", "--overwrite", ok=False), "current folder")
    user = tmp_path / "photos"
    user.mkdir()
    (user / "cat.jpg").write_text("meow")
    one_line(invoke("export", "--session", "s", "--out", str(user), "--overwrite", ok=False), "not an earlier export")
    assert (user / "cat.jpg").read_text() == "meow"
    invoke("export", "--session", "s", "--out", str(out), "--overwrite")  # an earlier export may be replaced


def test_an_export_that_finds_its_folder_taken_at_the_end_replaces_nothing(invoke, tiny_model_dir, tmp_path, monkeypatch):
    import core.session.export as ex

    scored(invoke, tiny_model_dir)
    out = tmp_path / "model"
    write = ex.write_json

    def other_export_finishes_first(path, data):
        write(path, data)
        out.mkdir()
        (out / "pruning.json").write_text(json.dumps({"tool": "lrp-workbench", "by": "the other export"}))

    monkeypatch.setattr(ex, "write_json", other_export_finishes_first)
    one_line(invoke("export", "--session", "s", "--out", str(out), ok=False), "appeared while exporting")
    assert json.loads((out / "pruning.json").read_text())["by"] == "the other export"
    assert not list(tmp_path.glob(".model.*"))


def test_files_follow_the_umask(invoke, tiny_model_dir, tmp_path):
    old = os.umask(0o022)
    try:
        scored(invoke, tiny_model_dir)
        invoke("prune", "--session", "s", "--sparsity", "0.3")
        invoke("export", "--session", "s", "--out", str(tmp_path / "model"))
    finally:
        os.umask(old)
    assert (tmp_path / "model").stat().st_mode & 0o777 == 0o755
    for f in ["model/pruning.json", "model/masks.safetensors", "store/s/manifest.json"]:
        assert (tmp_path / f).stat().st_mode & 0o777 == 0o644, f
    ranking = next((tmp_path / "store" / "s").glob("ranking-*.safetensors"))
    assert ranking.stat().st_mode & 0o777 == 0o644


def test_export_counts_sparsity_from_the_masks_it_writes(invoke, tiny_model_dir, tmp_path):
    scored(invoke, tiny_model_dir)
    invoke("prune", "--session", "s", "--sparsity", "0.4", "--granularity", "neuron")
    invoke("export", "--session", "s", "--out", str(tmp_path / "model"))
    info = json.loads((tmp_path / "model" / "pruning.json").read_text())
    with safe_open(str(tmp_path / "model" / "masks.safetensors"), framework="pt") as f:
        pruned = sum(int(f.get_tensor(k).sum()) for k in f.keys())
    assert info["pruned_weights"] == pruned and info["sparsity"] == pytest.approx(pruned / info["prunable_weights"])
