"""From summed scores to one ranking score per weight (higher = keep).

Reference only: the mean score over reference samples (paper: prune the least relevant),
by default the mean of per-sample magnitudes (`abs-sample`).
Contrastive (paper Eq. 7): R_diff = N(mean R_reference) - N(mean R_contrastive), so the
weights most relevant to the unwanted behaviour, and least to the wanted one, come out
most negative and are pruned first. N is a normalisation that puts both sets on one scale.
"""

from __future__ import annotations

import torch

from core.catalog import CATALOG

REDUCTIONS = CATALOG["reductions"]
NORMALIZATIONS = {
    "rank": "replace each layer's scores by their quantile in that layer (0..1): robust to outlier weights",
    "max": "divide each set by its largest |score| over all prunable weights",
    "layer-max": "divide each layer of each set by that layer's largest |score|",
    "l1": "divide each set by its total |score|",
    "none": "use the raw means",
}


def aggregation(reduce: str) -> str:
    """How per-sample relevance is summed while scoring: magnitudes, or signed values."""
    return "abs-sample" if reduce == "abs-sample" else "sum"


def _reduce(means: dict[str, torch.Tensor], how: str) -> dict[str, torch.Tensor]:
    return {k: v.abs() for k, v in means.items()} if how == "abs" else means


def _normalize(scores: dict[str, torch.Tensor], how: str) -> dict[str, torch.Tensor]:
    if how == "none":
        return scores
    if how == "rank":
        out = {}
        for k, v in scores.items():
            flat = v.reshape(-1)
            q = torch.empty_like(flat)
            q[flat.argsort()] = torch.arange(flat.numel(), dtype=flat.dtype) / max(flat.numel() - 1, 1)
            out[k] = q.view_as(v)
        return out
    if how == "layer-max":
        return {k: v / v.abs().max().clamp_min(1e-30) for k, v in scores.items()}
    if how == "max":
        denom = max(float(v.abs().max()) for v in scores.values())
    else:
        denom = sum(float(v.abs().sum()) for v in scores.values())
    denom = max(denom, 1e-30)
    return {k: v / denom for k, v in scores.items()}


def ranking_scores(
    reference: tuple[dict[str, torch.Tensor], int],
    contrastive: tuple[dict[str, torch.Tensor], int] | None,
    reduce: str = "abs-sample",
    normalize: str = "rank",
) -> dict[str, torch.Tensor]:
    ref = _reduce({k: v / max(reference[1], 1) for k, v in reference[0].items()}, reduce)
    if contrastive is None:
        return ref
    con = _reduce({k: v / max(contrastive[1], 1) for k, v in contrastive[0].items()}, reduce)
    ref, con = _normalize(ref, normalize), _normalize(con, normalize)
    return {k: ref[k] - con[k] for k in ref}
