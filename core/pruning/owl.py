"""OWL: outlier-weighted layerwise sparsity (Yin et al. 2024), on any scorer's ranking.

OWL gives each decoder block a sparsity from its share of outlier scores: the fraction
of the block's weights whose score exceeds M times the block's mean score (M = 5 in the
paper). Blocks with more outliers keep more weights: the ratios are scaled linearly onto
[0, 2 * lambda] and centred, so block sparsities span target +- lambda (lambda = 0.08 in
the paper; here `--spread`). With Wanda's scores this is OWL as published; with LRP's it
is the same rule on relevance.

The share is counted from the stored ranking: each row's values are sorted, so the
number above a threshold is one batched searchsorted per layer. The centring uses the
size-weighted mean, so the overall sparsity is exact (OWL's blocks are equal in size,
where the two agree).
"""

from __future__ import annotations

import torch

from core.errors import WorkbenchError
from core.model.layers import Prunable, block_prefix
from core.pruning.allocation import fit_budget
from core.pruning.ranking import Ranking
from core.pruning.plan import SparsityPlan, check_sparsity

OUTLIER_M = 5.0  # the paper's default
OWL_LAMBDA = 0.08  # the paper's default


def outlier_ratios(layers: list[Prunable], ranking: Ranking, m: float = OUTLIER_M) -> dict[int, float]:
    """Per decoder block: the share of its weights scoring above m times the block's mean score."""
    blocks: dict[int, list[Prunable]] = {}
    for p in layers:
        blocks.setdefault(p.block, []).append(p)
    ratios = {}
    for b, parts in sorted(blocks.items()):
        total = sum(float(ranking[p.name].rows.double().sum()) for p in parts)
        numel = sum(p.numel for p in parts)
        mean = total / numel
        if mean <= 0:
            raise WorkbenchError("OWL needs non-negative scores; these were made with a signed reduction or a "
                                 "contrastive set. Use --allocate relevance, or score with --reduce token-rms")
        threshold = torch.tensor(m * mean, dtype=torch.bfloat16)
        above = 0
        for p in parts:
            s = ranking[p.name].sorted
            above += s.numel() - int(torch.searchsorted(s, threshold.expand(s.shape[0], 1).contiguous(), right=True).sum())
        ratios[b] = above / numel
    return ratios


def owl_plan(layers: list[Prunable], ranking: Ranking, sparsity: float, lam: float = 0.08, m: float = OUTLIER_M,
             granularity: str = "row") -> SparsityPlan:
    """One override per decoder block: target sparsity minus the block's centred, scaled outlier share."""
    check_sparsity(sparsity)
    if sparsity == 0.0:
        return SparsityPlan(0.0, [], granularity)
    ratios = outlier_ratios(layers, ranking, m)
    lo, hi = min(ratios.values()), max(ratios.values())
    scaled = {b: ((r - lo) / (hi - lo) * 2 * lam if hi > lo else 0.0) for b, r in ratios.items()}
    sizes: dict[int, int] = {}
    for p in layers:
        sizes[p.block] = sizes.get(p.block, 0) + p.numel
    # more outliers -> denser: the offset from the target is minus the scaled ratio (centred by fit_budget)
    per_block = fit_budget({b: -v for b, v in scaled.items()}, sizes, sparsity)
    prefix = {p.block: block_prefix(p) for p in layers}
    return SparsityPlan(sparsity, [(f"{prefix[b]}.*", round(v, 6)) for b, v in per_block.items()], granularity)
