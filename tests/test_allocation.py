"""Relevance-allocated plans and slider levels <-> plans (pure Python, tiny layers)."""

import pytest
import torch
from torch import nn

from core.model.layers import prunable_layers
from core.pruning.allocation import allocate_blocks, relevance_plan
from core.pruning.levels import PlanLevels
from core.pruning.plan import SparsityPlan


class Tiny(nn.Module):
    def __init__(self, blocks: int = 4):
        super().__init__()
        self.model = nn.Module()
        self.model.layers = nn.ModuleList()
        for _ in range(blocks):
            blk = nn.Module()
            blk.self_attn = nn.Module()
            blk.self_attn.q_proj = nn.Linear(8, 8)
            blk.mlp = nn.Module()
            blk.mlp.up_proj = nn.Linear(8, 16)
            self.model.layers.append(blk)


def _mass(scores):
    return {k: float(v.abs().sum()) for k, v in scores.items()}


def test_less_relevant_blocks_give_up_more_at_the_same_budget():
    layers = prunable_layers(Tiny())
    scores = {p.name: torch.full(p.shape, float(p.block + 1)) for p in layers}  # block 3 most relevant
    plan = relevance_plan(layers, _mass(scores), 0.5, spread=0.1, method="relevance-raw")
    per_block = {b: plan.for_layer(f"model.layers.{b}.mlp.up_proj") for b in range(4)}
    assert per_block[0] > per_block[1] > per_block[2] > per_block[3]
    assert per_block[0] - per_block[3] == pytest.approx(0.2, abs=1e-6)
    sizes = {b: sum(p.numel for p in layers if p.block == b) for b in range(4)}
    assert sum(per_block[b] * sizes[b] for b in sizes) / sum(sizes.values()) == pytest.approx(0.5, abs=1e-6)


def test_relevance_allocation_follows_the_depth_trend_and_splits_blocks():
    layers = prunable_layers(Tiny(5))
    trend = {b: 2.0 ** b for b in range(5)}  # relevance per weight doubling with depth: no block stands out
    scores = {p.name: torch.full(p.shape, trend[p.block] * (0.5 if p.kind == "attn" else 1.0)) for p in layers}
    bump = dict(scores)
    bump["model.layers.2.mlp.up_proj"] = scores["model.layers.2.mlp.up_proj"] * 4  # block 2 above the trend
    plan = relevance_plan(layers, _mass(bump), 0.5, spread=0.1)
    attn = {b: plan.for_layer(f"model.layers.{b}.self_attn.q_proj") for b in range(5)}
    mlp = {b: plan.for_layer(f"model.layers.{b}.mlp.up_proj") for b in range(5)}
    block = {b: (attn[b] * 64 + mlp[b] * 128) / 192 for b in range(5)}
    assert block[2] == min(block.values())  # the block above the trend keeps the most weights
    assert all(attn[b] > mlp[b] for b in range(5))  # attention carries less relevance here: it gives up more
    total = sum(block[b] * 192 for b in range(5)) / (5 * 192)
    assert total == pytest.approx(0.5, abs=1e-5)
    flat = relevance_plan(layers, _mass(scores), 0.5, spread=0.1)
    flat_block = [(flat.for_layer(f"model.layers.{b}.self_attn.q_proj") * 64 + flat.for_layer(f"model.layers.{b}.mlp.up_proj") * 128) / 192 for b in range(5)]
    assert max(flat_block) - min(flat_block) < 1e-6  # a pure depth trend moves nothing between blocks


def test_clamping_keeps_the_budget():
    per = allocate_blocks({0: 1.0, 1: 2.0, 2: 3.0}, {0: 10, 1: 10, 2: 80}, 0.95, 0.3)
    assert max(per.values()) <= 0.99
    assert (per[0] * 10 + per[1] * 10 + per[2] * 80) / 100 == pytest.approx(0.95, abs=1e-4)


def test_levels_round_trip_through_plans():
    layers = prunable_layers(Tiny(3))
    index = [{"name": p.name, "block": p.block, "kind": p.kind, "prefix": f"model.layers.{p.block}", "numel": p.numel}
             for p in layers]
    lv = PlanLevels(0.3)
    lv.set_block(1, 0.6)
    lv.set_kind(2, "attn", 0.8)
    plan = lv.to_plan(index)
    assert plan.for_layer("model.layers.0.mlp.up_proj") == 0.3
    assert plan.for_layer("model.layers.1.self_attn.q_proj") == 0.6
    assert plan.for_layer("model.layers.2.self_attn.q_proj") == 0.8
    assert plan.for_layer("model.layers.2.mlp.up_proj") == 0.3
    back = PlanLevels.from_plan(plan, index)
    assert back.blocks == {1: 0.6} and back.kinds[(2, "attn")] == 0.8 and not back.custom
    # moving a block slider replaces its part levels
    back.set_block(2, 0.1)
    assert (2, "attn") not in back.kinds and back.level(2, "attn") == 0.1
    # a CLI plan the sliders cannot express exactly is flagged
    odd = SparsityPlan(0.2, [("model.layers.0.self_attn.q_proj", 0.5), ("*up_proj", 0.4)])
    lv2 = PlanLevels.from_plan(odd, index)
    assert lv2.level(0, "attn") == 0.5 and lv2.level(1, "mlp") == 0.4 and not lv2.custom


def test_owl_gives_blocks_with_more_outliers_more_weights():
    from core.pruning.ranking import Ranking
    from core.pruning.owl import outlier_ratios, owl_plan

    layers = prunable_layers(Tiny(4))
    gen = torch.Generator().manual_seed(0)
    scores = {p.name: torch.rand(p.shape, generator=gen) for p in layers}
    for p in layers:  # outliers (20x the rest) in 1, 2, 4 and 8 of every 64 weights of blocks 0..3
        flat = scores[p.name].view(-1)
        flat[:: 64 // (2 ** p.block)] = 20.0
    ranking = Ranking.from_values(scores, {})
    ratios = outlier_ratios(layers, ranking)
    assert ratios[0] < ratios[1] < ratios[2] < ratios[3]
    plan = owl_plan(layers, ranking, 0.5, lam=0.08)
    per_block = {b: plan.for_layer(f"model.layers.{b}.mlp.up_proj") for b in range(4)}
    assert per_block[0] > per_block[1] > per_block[2] > per_block[3]
    assert per_block[0] - per_block[3] == pytest.approx(0.16, abs=1e-4)  # +-lambda
    sizes = {b: sum(p.numel for p in layers if p.block == b) for b in range(4)}
    assert sum(per_block[b] * sizes[b] for b in sizes) / sum(sizes.values()) == pytest.approx(0.5, abs=1e-6)
