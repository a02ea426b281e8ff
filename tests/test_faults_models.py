"""Models: no remote code from a session, the GGUF cache, truncated GGUFs, no pickles (items 2, 9, 10, 12)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from faults_support import one_line, scored


# ---- 2. a session file never switches on remote code -----------------------------------------------
CUSTOM = """
import os, pathlib
pathlib.Path(os.environ["WORKBENCH_TEST_MARKER"]).write_text("remote code ran")
from transformers import LlamaForCausalLM


class CustomLlama(LlamaForCausalLM):
    pass
"""


def test_a_sessions_stored_trust_remote_code_runs_nothing(invoke, tiny_model_dir, tmp_path, monkeypatch):
    model = tmp_path / "custom-model"
    shutil.copytree(tiny_model_dir, model)
    (model / "custom_model.py").write_text(CUSTOM)
    cfg = json.loads((model / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForCausalLM": "custom_model.CustomLlama"}
    (model / "config.json").write_text(json.dumps(cfg))
    marker = tmp_path / "ran"
    monkeypatch.setenv("WORKBENCH_TEST_MARKER", str(marker))
    scored(invoke, model, "r")
    manifest = tmp_path / "store" / "r" / "manifest.json"
    data = json.loads(manifest.read_text())
    data["model"]["spec"]["trust_remote_code"] = True  # as a session from someone else may say
    manifest.write_text(json.dumps(data))
    invoke("eval", "--session", "r", "--metrics", "perplexity")
    invoke("generate", "--session", "r", "--max-new-tokens", "2")
    invoke("prune", "--session", "r", "--sparsity", "0.2")
    assert not marker.exists()
    assert json.loads(manifest.read_text())["model"]["spec"]["trust_remote_code"] is False  # the record says so too


# ---- 9, 12. the GGUF cache: one conversion per content, never replaced under a reader -------------------
def test_the_gguf_cache_is_keyed_by_content_and_never_replaced(tmp_path, monkeypatch, tiny_model_dir):
    import core.model.loading as loading
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setenv("WORKBENCH_CACHE_DIR", str(tmp_path / "cache"))
    conversions = []

    def convert(path):
        conversions.append(path)
        return AutoModelForCausalLM.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir)

    monkeypatch.setattr(loading, "_from_gguf", convert)
    a, b = tmp_path / "one" / "m.gguf", tmp_path / "two" / "m.gguf"  # two checkouts, one file
    for f in (a, b):
        f.parent.mkdir()
        f.write_bytes(b"GGUF the same content")
    first = loading.gguf_cache(a, "m")
    stamp = (first / "config.json").stat().st_mtime_ns
    assert loading.gguf_cache(b, "m") == first and len(conversions) == 1
    assert (first / "config.json").stat().st_mtime_ns == stamp
    b.write_bytes(b"GGUF other content")
    assert loading.gguf_cache(b, "m") != first and len(conversions) == 2

    c = tmp_path / "three" / "m.gguf"
    c.parent.mkdir()
    c.write_bytes(b"GGUF third")
    winner = tmp_path / "cache" / f"m-{loading.file_digest(c)[:16]}"

    def racing(path):
        out = convert(path)
        shutil.copytree(first, winner)  # another process's finished folder lands while we convert
        return out

    monkeypatch.setattr(loading, "_from_gguf", racing)
    assert loading.gguf_cache(c, "m") == winner and (winner / "source.json").is_file()
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".m-")]


def test_a_truncated_gguf_is_one_line(invoke, tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE_DIR", str(tmp_path / "cache"))
    bad = tmp_path / "cut.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\x01" * 100)
    one_line(invoke("score", "--session", "g", "--model", str(bad), ok=False), "not a GGUF model")
    assert not (tmp_path / "store" / "g").exists()  # and no empty session is left (item 14)


# ---- 10. pickles are refused ------------------------------------------------------------------------------
def test_pickled_weights_are_refused_with_how_to_convert(invoke, tiny_model_dir, tmp_path):
    model = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, model)
    for f in model.glob("*.safetensors"):
        f.unlink()
    torch.save({"w": torch.zeros(1)}, model / "pytorch_model.bin")
    one_line(invoke("score", "--session", "p", "--model", str(model), ok=False), "save_pretrained")
