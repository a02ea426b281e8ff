"""Relevance-allocated sparsity: decoder blocks that carry less relevance give up more weights.

Uniform pruning takes the same share from every block. Here each block's share
depends on its relevance density (mean score per weight, from the reference set):
blocks are ranked by density and spread linearly from `sparsity + spread` (least
relevant) to `sparsity - spread` (most relevant). A common shift then makes the
weight-weighted mean equal `sparsity` exactly, so the overall budget matches the
uniform plan it is compared with. Ranks instead of raw densities keep one outlier
block (often the first) from taking the whole budget (compare OWL, Yin et al. 2024,
which does the same with activation-outlier ratios).
"""

from __future__ import annotations

import torch

from core.errors import WorkbenchError
from core.layers import Prunable
from core.plan import SparsityPlan, check_sparsity

ALLOCATIONS = {
    "uniform": "every layer at the same sparsity",
    "relevance": "per-block sparsity from relevance: less relevant decoder blocks give up more weights, same overall sparsity",
}
MAX_LAYER_SPARSITY = 0.99


def block_relevance(layers: list[Prunable], scores: dict[str, torch.Tensor]) -> dict[int, float]:
    """Mean |score| per weight in each decoder block."""
    mass: dict[int, list[float]] = {}
    for p in layers:
        agg = mass.setdefault(p.block, [0.0, 0])
        agg[0] += float(scores[p.name].double().abs().sum())
        agg[1] += p.numel
    return {b: m / max(n, 1) for b, (m, n) in sorted(mass.items())}


def _weighted_mean(values: dict[int, float], sizes: dict[int, int]) -> float:
    return sum(values[b] * sizes[b] for b in values) / sum(sizes.values())


def allocate_blocks(density: dict[int, float], sizes: dict[int, int], sparsity: float, spread: float) -> dict[int, float]:
    """Per-block sparsity: linear in the density rank, shifted so the weighted mean is `sparsity`."""
    blocks = sorted(density, key=lambda b: (density[b], b))  # least relevant first
    n = len(blocks)
    base = {b: (spread * (1 - 2 * i / (n - 1)) if n > 1 else 0.0) for i, b in enumerate(blocks)}

    def shifted(c: float) -> dict[int, float]:
        return {b: min(max(sparsity + base[b] + c, 0.0), MAX_LAYER_SPARSITY) for b in blocks}

    lo, hi = -1.0, 1.0  # bisection on the shift: clamping makes the mean monotone but not linear
    for _ in range(60):
        mid = (lo + hi) / 2
        if _weighted_mean(shifted(mid), sizes) < sparsity:
            lo = mid
        else:
            hi = mid
    return shifted((lo + hi) / 2)


def relevance_plan(
    layers: list[Prunable], scores: dict[str, torch.Tensor], sparsity: float, spread: float = 0.1, granularity: str = "row"
) -> SparsityPlan:
    """A plan with one override per decoder block (`<block prefix>.*`)."""
    check_sparsity(sparsity)
    if not 0.0 <= spread <= 0.5:
        raise WorkbenchError(f"--spread {spread} is outside [0, 0.5]; 0.1 moves each block up to 10 points from the target")
    if sparsity == 0.0:
        return SparsityPlan(0.0, [], granularity)
    sizes: dict[int, int] = {}
    for p in layers:
        sizes[p.block] = sizes.get(p.block, 0) + p.numel
    per_block = allocate_blocks(block_relevance(layers, scores), sizes, sparsity, spread)
    prefix = {p.block: block_prefix(p) for p in layers}
    overrides = [(f"{prefix[b]}.*", round(v, 6)) for b, v in per_block.items()]
    return SparsityPlan(sparsity, overrides, granularity)


def block_prefix(p: Prunable) -> str:
    """'model.layers.3.mlp.up_proj' (block 3) -> 'model.layers.3'."""
    parts = p.name.split(".")
    for i, part in enumerate(parts):
        if part == str(p.block) and i > 0:
            return ".".join(parts[: i + 1])
    raise WorkbenchError(f"cannot find the block index {p.block} in layer name {p.name!r}")
