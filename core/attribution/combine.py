"""From finished scores to one ranking value per weight (higher = keep).

Reference only: the scores as finished (for `abs` made absolute: |mean relevance|, the
paper's Eq. 1 ranked by magnitude; `signed-contrast` keeps only the contrastive set's sign).
Contrastive (paper Eq. 7):
R_diff = N(R_reference) - N(R_contrastive), so the weights most relevant to the unwanted
behaviour, and least to the wanted one, come out most negative and are pruned first. N
is a normalisation that puts both sets on one scale.

Everything here works one layer at a time except the two global normalisations (`max`,
`l1`), which need one number over all layers first.
"""

from __future__ import annotations

import torch

Scores = dict[str, torch.Tensor]  # layer name -> [out, in] fp32


ACCUMULATE = {"abs-sample": "abs-sample", "token-rms": "token-sq", "token-abs": "token-abs", "abs": "sum", "signed": "sum",
              "signed-contrast": "sum"}


def accumulator(reduce: str) -> str:
    """What a `--reduce` accumulates while scoring (see core/attribution/scorers/gradient.py)."""
    return ACCUMULATE[reduce]


def reduced(scores: Scores, reduce: str, contrastive: bool = False) -> Scores:
    """Scores as ranked: absolute for `abs`, and for `signed-contrast` on every set but the contrastive one."""
    absolute = reduce == "abs" or (reduce == "signed-contrast" and not contrastive)
    return {k: v.abs() for k, v in scores.items()} if absolute else scores


def _rank01(v: torch.Tensor) -> torch.Tensor:
    flat = v.reshape(-1)
    q = torch.empty_like(flat)
    q[flat.argsort(stable=True)] = torch.arange(flat.numel(), dtype=flat.dtype) / max(flat.numel() - 1, 1)
    return q.view_as(v)


#: normalisations that need nothing beyond the layer itself (max and l1 divide by a total over all layers)
LAYER_LOCAL_NORMALIZE = ("rank", "layer-max", "none")


def normalized(scores: Scores, how: str) -> Scores:
    if how == "none":
        return scores
    if how == "rank":
        return {k: _rank01(v) for k, v in scores.items()}
    if how == "layer-max":
        return {k: v / v.abs().max().clamp_min(1e-30) for k, v in scores.items()}
    if how == "max":
        denom = max(float(v.abs().max()) for v in scores.values())
    else:  # l1
        denom = sum(float(v.abs().sum()) for v in scores.values())
    denom = max(denom, 1e-30)
    return {k: v / denom for k, v in scores.items()}


def ranking_values(reference: Scores, contrastive: Scores | None, reduce: str, normalize: str,
                   paired: Scores | None = None) -> Scores:
    """Finished scores of the reference (and contrastive) set -> ranking values.

    `paired` (--pair clean): the contrastive prompts continued the wanted way. A weight is kept
    when either the reference or that clean continuation needs it, so what the contrast removes
    first is what the unwanted continuation needs beyond its prompt and beyond general text.
    """
    ref = reduced(reference, reduce)
    if contrastive is None:
        return ref
    con = reduced(contrastive, reduce, contrastive=True)
    ref, con = normalized(ref, normalize), normalized(con, normalize)
    if paired is not None:
        clean = normalized(reduced(paired, reduce), normalize)
        ref = {k: torch.maximum(v, clean[k]) for k, v in ref.items()}
    return {k: ref[k] - con[k] for k in ref}


def unit_values(scores: dict[str, Scores], reduce: str, normalize: str) -> Scores:
    """Units' own scores ({"reference": {"head": [n]}, "contrastive": ..., "paired": ...}) -> ranking values, as for weights."""
    ref, con, clean = scores.get("reference", {}), scores.get("contrastive"), scores.get("paired")
    if con is not None:
        ref = {k: v for k, v in ref.items() if k in con}
    return ranking_values(ref, {k: con[k] for k in ref} if con is not None else None, reduce, normalize,
                          {k: clean[k] for k in ref} if clean is not None else None)
