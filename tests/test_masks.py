"""Pruning from cached rankings: exact sparsity, incremental moves, exact dense restore."""

import pytest
import torch

from core.errors import WorkbenchError
from core.layers import prunable_layers, weight_view
from core.masks import Pruner, pack_mask, unpack_mask
from core.plan import SparsityPlan, parse_override
from tests.conftest import make_tiny


def _setup(tokenizer, arch="llama", seed=0):
    lm = make_tiny(arch, tokenizer, seed)
    layers = prunable_layers(lm.model)
    gen = torch.Generator().manual_seed(seed + 100)
    for p in layers:  # random init leaves biases at zero; make them visible
        if getattr(p.module, "bias", None) is not None:
            p.module.bias.data = torch.rand(p.module.bias.shape, generator=gen) + 0.1
    scores = {p.name: torch.rand(p.shape, generator=gen) for p in layers}
    dense = {p.name: p.module.weight.detach().clone() for p in layers}
    return lm, layers, scores, dense


def _zeros(layers):
    return sum(int((p.module.weight == 0).sum()) for p in layers)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "opt"])
def test_row_wise_prunes_lowest_scores_in_every_row(tokenizer, arch):
    lm, layers, scores, dense = _setup(tokenizer, arch)
    pruner = Pruner(layers, scores)
    pruner.apply(SparsityPlan(0.5))
    for p in layers:
        w = weight_view(p)
        out, inn = p.shape
        k = round(0.5 * inn)
        assert int((w == 0).sum()) == k * out
        lowest = scores[p.name].argsort(dim=1)[:, :k]
        assert (w.gather(1, lowest) == 0).all()
        assert pruner.mask(p.name).sum() == k * out
        assert torch.equal(pruner.mask(p.name), w == 0)
    assert pruner.achieved_sparsity() == pytest.approx(_zeros(layers) / sum(p.numel for p in layers), abs=0)


def test_incremental_moves_match_fresh_application(tokenizer):
    lm, layers, scores, dense = _setup(tokenizer)
    pruner = Pruner(layers, scores)
    for s in (0.5, 0.2, 0.7, 0.72, 0.69, 0.3, 0.31):  # big steps and 1-2 position steps: both write orders
        pruner.apply(SparsityPlan(s))
    moved = {p.name: p.module.weight.detach().clone() for p in layers}
    moved_masks = {p.name: pruner.mask(p.name) for p in layers}
    pruner.apply(SparsityPlan(0.0))
    fresh = Pruner(layers, scores)
    fresh.apply(SparsityPlan(0.31))
    for p in layers:
        assert torch.equal(moved[p.name], p.module.weight)
        assert torch.equal(moved_masks[p.name], fresh.mask(p.name))


def test_back_to_dense_restores_exact_weights(tokenizer):
    lm, layers, scores, dense = _setup(tokenizer)
    pruner = Pruner(layers, scores)
    for g in ("row", "layer", "global", "neuron"):
        pruner.apply(SparsityPlan(0.6, granularity=g))
        assert _zeros(layers) > 0
        pruner.apply(SparsityPlan(0.0, granularity=g))
        for p in layers:
            assert torch.equal(p.module.weight, dense[p.name])


def test_global_prunes_exact_count_with_lowest_scores(tokenizer):
    lm, layers, scores, dense = _setup(tokenizer)
    pruner = Pruner(layers, scores)
    pruner.apply(SparsityPlan(0.37, granularity="global"))
    total = sum(p.numel for p in layers)
    want = round(0.37 * total)
    assert _zeros(layers) == want == sum(pruner.pruned_counts().values())
    threshold = torch.cat([scores[p.name].reshape(-1) for p in layers]).sort().values[want - 1]
    for p in layers:
        pruned_scores = scores[p.name][weight_view(p) == 0]
        assert (pruned_scores <= threshold).all()


def test_global_breaks_ties_exactly(tokenizer):
    lm, layers, _, dense = _setup(tokenizer)
    scores = {p.name: torch.zeros(p.shape) for p in layers}  # everything ties
    pruner = Pruner(layers, scores)
    pruner.apply(SparsityPlan(0.25, granularity="global"))
    assert _zeros(layers) == round(0.25 * sum(p.numel for p in layers))


def test_neuron_granularity_removes_rows_and_biases(tokenizer):
    lm, layers, scores, dense = _setup(tokenizer, "opt")
    pruner = Pruner(layers, scores)
    pruner.apply(SparsityPlan(0.25, granularity="neuron"))
    fc1 = next(p for p in layers if p.name.endswith("fc1"))
    w = weight_view(fc1)
    dead = (w == 0).all(dim=1)
    assert int(dead.sum()) == round(0.25 * fc1.shape[0])
    assert (fc1.module.bias[dead] == 0).all()
    pruner.apply(SparsityPlan(0.0, granularity="neuron"))
    assert (fc1.module.bias != 0).any()


def test_layer_overrides_by_pattern(tokenizer):
    lm, layers, scores, dense = _setup(tokenizer)
    plan = SparsityPlan(0.5, [parse_override("model.layers.0.*=0.1"), parse_override("*.mlp.down_proj=0.0")])
    pruner = Pruner(layers, scores)
    pruner.apply(plan)
    for p in layers:
        share = float((p.module.weight == 0).float().mean())
        want = 0.0 if p.name.endswith("down_proj") else (0.1 if p.name.startswith("model.layers.0.") else 0.5)
        assert share == pytest.approx(want, abs=1 / p.shape[1])


def test_pruned_and_dense_swap_is_exact(tokenizer):
    lm, layers, scores, dense = _setup(tokenizer)
    pruner = Pruner(layers, scores)
    pruner.apply(SparsityPlan(0.5))
    pruner.use_pruned(False)
    assert all(torch.equal(p.module.weight, dense[p.name]) for p in layers)
    pruner.use_pruned(True)
    assert _zeros(layers) == sum(pruner.pruned_counts().values())


@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5])
def test_sparsity_outside_range_is_refused(bad):
    with pytest.raises(WorkbenchError, match=r"outside \[0, 1\)"):
        SparsityPlan(bad)


def test_unknown_pattern_and_granularity_are_refused(tokenizer):
    lm, layers, scores, _ = _setup(tokenizer)
    with pytest.raises(WorkbenchError, match="matches no prunable layer"):
        Pruner(layers, scores).apply(SparsityPlan(0.5, [("decoder.nothing.*", 0.1)]))
    with pytest.raises(WorkbenchError, match="granularity"):
        SparsityPlan(0.5, granularity="diagonal")
    with pytest.raises(WorkbenchError, match="PATTERN=SPARSITY"):
        parse_override("model.layers.0.*")


def test_mask_packing_round_trips():
    m = torch.rand(7, 13) > 0.5
    assert torch.equal(unpack_mask(pack_mask(m), (7, 13)), m)
