"""Numbers out of range and ordinary mistakes: one error line, before any model loads where it can (items 11, 12)."""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import pytest

import core.engine_model
from faults_support import one_line, scored


# ---- 11. numbers out of range fail before any model loads ---------------------------------------------
@pytest.mark.parametrize("args,needle", [
    (["eval", "--session", "s", "--samples", "0"], "--samples 0 must be at least 1"),
    (["eval", "--session", "s", "--samples", "-3"], "--samples -3"),
    (["eval", "--session", "s", "--max-new-tokens", "-1"], "--max-new-tokens -1"),
    (["generate", "--session", "s", "--max-new-tokens", "-1"], "--max-new-tokens -1"),
    (["generate", "--session", "s", "--top-p", "2"], "--top-p 2 is outside (0, 1]"),
    (["generate", "--session", "s", "--temperature", "0", "--sample"], "--temperature 0 must be above 0"),
    (["score", "--session", "s", "--damping", "-1"], "--damping -1"),
    (["score", "--session", "s", "--samples", "0"], "--samples 0"),
    (["prune", "--session", "s", "--sparsity", "1.5"], "--sparsity 1.5 is outside [0, 1)"),
    (["correct", "--session", "s", "--prompts", "0"], "--prompts 0"),
    (["circuit", "--session", "s", "--threshold", "0"], "--threshold 0"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_numbers_out_of_range_are_refused_before_the_model_loads(invoke, tiny_model_dir, monkeypatch, args, needle):
    scored(invoke, tiny_model_dir)

    def no_load(*a, **k):
        raise AssertionError("the model was loaded for a refused command")

    monkeypatch.setattr(core.engine_model, "load_model", no_load)
    one_line(invoke(*args, ok=False), needle)


def test_numbers_the_model_bounds_are_refused(invoke, tiny_model_dir, tmp_path):
    scored(invoke, tiny_model_dir)
    one_line(invoke("score", "--session", "s", "--seq-len", "100000", ok=False), "longer than the model's 256 positions")
    one_line(invoke("prune", "--session", "s", "--granularity", "neuron", "--count", "1000000000", ok=False),
             "this model has 128 neurons")
    one_line(invoke("prune", "--session", "s", "--granularity", "head", "--count", "99", ok=False), "8 heads")
    pruned = json.loads(invoke("prune", "--session", "s", "--granularity", "neuron", "--count", "32", "--json").stdout)
    assert pruned["sparsity"] > 0.05
    row = json.loads(invoke("session", "list", "--json").stdout)[0]
    assert row["sparsity"] == pytest.approx(pruned["sparsity"])  # not the stale row-plan counts


# ---- 12. ordinary errors are ordinary -----------------------------------------------------------------
def test_a_full_disk_says_how_much_and_where(invoke, tiny_model_dir, tmp_path, monkeypatch):
    import core.session.atomic as atomic

    scored(invoke, tiny_model_dir)
    real = shutil.disk_usage
    with monkeypatch.context() as mp:
        mp.setattr(atomic.shutil, "disk_usage", lambda p: real(p)._replace(free=1000))
        err = one_line(invoke("score", "--session", "s", "--seed", "9", ok=False), "not enough disk space in")
        assert "needs about" in err and str(tmp_path / "store" / "s") in err
        err = one_line(invoke("export", "--session", "s", "--out", str(tmp_path / "model"), ok=False), "not enough disk space")
        assert "export model" in err and not list(tmp_path.glob(".model.*"))

    import safetensors.torch

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    one_line(invoke("prune", "--session", "s", "--sparsity", "0.3", ok=False), "filled up while writing counts")
    assert not list((tmp_path / "store" / "s").glob(".*.tmp"))


def test_ordinary_mistakes_are_one_error_line(invoke, tiny_model_dir, tmp_path, monkeypatch):
    scored(invoke, tiny_model_dir)
    one_line(invoke("prune", "--session", "s", "--sparsity", "abc", ok=False), "Invalid value for '--sparsity'", 2)
    one_line(invoke("prune", "--session", "s", "--bogus", ok=False), "No such option", 2)
    one_line(invoke("session", "delete", "s", ok=False), "pass --yes")  # no terminal to ask
    assert (tmp_path / "store" / "s" / "manifest.json").is_file()
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a paragraph of text\n")
    real = Path.read_bytes

    def unreadable(self):
        if self.name == "prompts.txt":
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", unreadable)
    one_line(invoke("score", "--session", "s", "--reference", str(prompts), ok=False), "cannot read prompt file")
