"""LRP rules: conservation, lm_head relevance, architectures, and that patches are undone."""

import pytest
import torch
from torch import nn

from core.errors import WorkbenchError
from core.attribution.lrp_rules import lrp_rules
from core.attribution.runner import run_scorer
from core.data.tokens import batch_sequences
from core.model.layers import prunable_layers
from tests.conftest import make_tiny


def _input_relevance(model, ids, rules):
    emb = model.get_input_embeddings()(ids).detach().requires_grad_(True)
    with lrp_rules(model, rules):
        logits = model(inputs_embeds=emb, use_cache=False).logits
        target = logits[0, -1].max()
        target.backward()
    return float((emb * emb.grad).sum().detach()), float(target.detach())


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3"])
def test_cp_lrp_conserves_relevance(tokenizer, arch):
    lm = make_tiny(arch, tokenizer)
    ids = torch.randint(1, len(tokenizer), (1, 12), generator=torch.Generator().manual_seed(0))
    relevance, logit = _input_relevance(lm.model, ids, "cplrp")
    assert relevance == pytest.approx(logit, rel=1e-3)


def test_attnlrp_differs_from_gradient(tiny_llama):
    ids = torch.randint(1, 300, (1, 12), generator=torch.Generator().manual_seed(1))
    with_rules, logit = _input_relevance(tiny_llama.model, ids, "attnlrp")
    emb = tiny_llama.model.get_input_embeddings()(ids).detach().requires_grad_(True)
    tiny_llama.model(inputs_embeds=emb).logits[0, -1].max().backward()
    plain = float((emb * emb.grad).sum().detach())
    assert abs(with_rules - plain) > 1e-4 * abs(logit)


def test_lm_head_weight_relevance_sums_to_logit(tiny_llama):
    model = tiny_llama.model
    ids = torch.randint(1, 300, (1, 10), generator=torch.Generator().manual_seed(2))
    head = model.lm_head.weight
    head.requires_grad_(True)
    try:
        with lrp_rules(model, "attnlrp"):
            logit = model(input_ids=ids).logits[0, -1].max()
            logit.backward()
        assert float((head * head.grad).sum().detach()) == pytest.approx(float(logit.detach()), rel=1e-4)
    finally:
        head.requires_grad_(False)
        head.grad = None


def test_patches_are_undone_and_forward_unchanged(tiny_llama):
    from transformers.models.llama import modeling_llama

    before = (modeling_llama.LlamaMLP.forward, modeling_llama.LlamaRMSNorm.forward, nn.Dropout.forward,
              modeling_llama.eager_attention_forward, modeling_llama.ALL_ATTENTION_FUNCTIONS)
    ids = torch.randint(1, 300, (1, 8), generator=torch.Generator().manual_seed(3))
    dense = tiny_llama.model(input_ids=ids).logits
    with lrp_rules(tiny_llama.model):
        assert modeling_llama.LlamaMLP.forward is not before[0]
        patched = tiny_llama.model(input_ids=ids).logits
    after = (modeling_llama.LlamaMLP.forward, modeling_llama.LlamaRMSNorm.forward, nn.Dropout.forward,
             modeling_llama.eager_attention_forward, modeling_llama.ALL_ATTENTION_FUNCTIONS)
    assert after == before
    assert torch.allclose(dense, patched, atol=1e-5)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3", "opt", "gpt2"])
def test_lrp_scores_every_prunable_layer(tokenizer, arch):
    lm = make_tiny(arch, tokenizer)
    layers = prunable_layers(lm.model)
    assert len(layers) == {"llama": 14, "qwen2": 14, "qwen3": 14, "opt": 12, "gpt2": 8}[arch]
    seqs = [tokenizer("The kettle clicked off just as the toast popped up.")["input_ids"]] * 2
    state = run_scorer("lrp", lm.model, layers, batch_sequences(seqs, 0, 2))
    assert state.samples == 2
    for p in layers:
        s = state.sums[p.name]
        assert s.shape == p.shape and s.dtype == torch.float32
        assert torch.isfinite(s).all() and s.abs().sum() > 0
    assert all(not p.module.weight.requires_grad and p.module.weight.grad is None for p in layers)


def test_opt_lrp_uses_rules(tokenizer):
    lm = make_tiny("opt", tokenizer)
    layers = prunable_layers(lm.model)
    seqs = [tokenizer("Water boils at 100 degrees Celsius at sea level.")["input_ids"]]
    lrp = run_scorer("lrp", lm.model, layers, batch_sequences(seqs, 0, 1)).sums
    grad = run_scorer("gradient", lm.model, layers, batch_sequences(seqs, 0, 1)).sums
    name = layers[0].name
    assert not torch.allclose(lrp[name], grad[name])


def test_unsupported_architecture_refuses_with_one_line(tokenizer):
    lm = make_tiny("gpt_neox", tokenizer)
    layers = prunable_layers(lm.model)
    seqs = [tokenizer("Autumn arrived early that year.")["input_ids"]]
    with pytest.raises(WorkbenchError) as err:
        run_scorer("lrp", lm.model, layers, batch_sequences(seqs, 0, 1))
    message = str(err.value)
    assert "\n" not in message and "llama" in message and "wanda" in message
    assert run_scorer("wanda", lm.model, layers, batch_sequences(seqs, 0, 1)).sums  # other scorers still work
