"""CAP: the cached partial forward gives the full-forward answer; heads become weight scores; the linear approximation."""

import pytest
import torch

from core.attribution.runner import finish, finish_units, run_scorer
from core.attribution.scorers.cap import HEADS, per_sample_metric
from core.data.prompt_sets import load_prompt_set
from core.data.tokens import batch_sequences, pack_windows, task_batches
from core.model.layers import prunable_layers, weight_view
from core.model.units import heads
from tests.conftest import CORPUS, make_tiny


def _full_damage(model, layers, batch, unit) -> float:
    """Zero the head in a plain full forward pass: what CAP must equal."""
    part = next(p for p in unit.parts if p.axis == "col")
    module = next(p for p in layers if p.name == part.layer).module

    def pre(_m, args):
        x = args[0].clone()
        x[..., part.start : part.stop] = 0
        return (x,)

    with torch.no_grad():
        clean = per_sample_metric(model, batch)
        h = module.register_forward_pre_hook(pre)
        try:
            ablated = per_sample_metric(model, batch)
        finally:
            h.remove()
    return float((clean - ablated).sum())


@pytest.mark.parametrize("arch", ["llama", "gpt2", "opt"])
def test_cap_equals_zeroing_each_head_in_a_full_forward(tokenizer, arch):
    lm = make_tiny(arch, tokenizer)
    layers = prunable_layers(lm.model)
    data = pack_windows(tokenizer, CORPUS.split("\n\n")[1:10], 24)[:4]
    batches = batch_sequences(data, 0, 4)
    state = run_scorer("cap", lm.model, layers, batches)
    units = heads(lm.model, layers)
    assert state.sums[HEADS].shape == (len(units),)
    for i, u in enumerate(units):
        assert float(state.sums[HEADS][i]) == pytest.approx(_full_damage(lm.model, layers, batches[0], u), rel=1e-4, abs=1e-5)
    # the cache was undone: blocks compute again
    assert all("forward" not in vars(lm.model.get_submodule(f"{p.name.rsplit('.', 2)[0]}")) for p in layers[:1])


def test_cap_on_a_task_measures_the_logit_difference_and_scales_head_weights(tokenizer):
    lm = make_tiny("llama", tokenizer)
    layers = prunable_layers(lm.model)
    items = load_prompt_set("builtin:ioi").task_score[:6]
    batches = task_batches(tokenizer, items, 64, 6)
    state = run_scorer("cap", lm.model, layers, batches)
    units = heads(lm.model, layers)
    assert float(state.sums[HEADS][2]) == pytest.approx(_full_damage(lm.model, layers, batches[0], units[2]), rel=1e-4, abs=1e-5)
    imp = finish_units("cap", lm.model, layers, state)["head"]
    assert torch.allclose(imp, state.sums[HEADS] / 6)
    scores = finish("cap", lm.model, layers, state)
    wanda = {p.name: weight_view(p).abs() * state.sums[p.name].sqrt() for p in layers}
    scale = imp.clamp(min=0) / imp.clamp(min=0).mean()
    q = next(p for p in layers if p.name == units[1].parts[0].layer)
    assert torch.allclose(scores[q.name][8:16], wanda[q.name][8:16] * scale[1], rtol=1e-5)  # head 1's query rows
    mlp = next(p for p in layers if p.kind == "mlp")
    assert torch.allclose(scores[mlp.name], wanda[mlp.name])  # MLP weights: Wanda's score, unscaled


def test_linear_approximation_tracks_the_causal_effect(tokenizer):
    lm = make_tiny("llama", tokenizer)
    layers = prunable_layers(lm.model)
    data = pack_windows(tokenizer, CORPUS.split("\n\n")[1:10], 24)[:4]
    batches = batch_sequences(data, 0, 4)
    causal = run_scorer("cap", lm.model, layers, batches).sums[HEADS]
    linear = run_scorer("cap-linear", lm.model, layers, batches).sums[HEADS]
    assert linear.shape == causal.shape and torch.isfinite(linear).all()
    corr = torch.corrcoef(torch.stack([causal, linear]))[0, 1]
    assert corr > 0.5  # a first-order estimate of the same damage
