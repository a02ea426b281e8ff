"""Wanda (Sun et al. 2023): |W_ij| * ||X_j||_2, the input activation norm over all tokens."""

from __future__ import annotations

import torch

from core.layers import Prunable, weight_view
from core.scorers.base import ScoreState

_SUMSQ = "__wanda_sumsq__."  # prefix of per-layer [in] accumulators kept in the state between batches


@torch.no_grad()
def accumulate(model, layers: list[Prunable], ids: torch.Tensor, mask: torch.Tensor, state: ScoreState) -> None:
    keep = mask.bool()  # [batch, seq]; pads do not count

    def hook_for(p: Prunable):
        key = _SUMSQ + p.name

        def hook(_module, inputs, _output):
            x = inputs[0][keep].float()  # [tokens, in]
            sq = (x * x).sum(0)  # [in]
            if key in state.sums:
                state.sums[key] += sq
            else:
                state.sums[key] = sq

        return hook

    handles = [p.module.register_forward_hook(hook_for(p)) for p in layers]
    try:
        model(input_ids=ids, attention_mask=mask)
    finally:
        for h in handles:
            h.remove()


def finish(layers: list[Prunable], state: ScoreState) -> ScoreState:
    sums = {}
    for p in layers:
        norm = state.sums[_SUMSQ + p.name].sqrt()  # [in]
        # Stored as a sum like every scorer's: the mean (divided by samples) ranks the same.
        sums[p.name] = weight_view(p).detach().abs().float() * norm.unsqueeze(0) * state.samples  # [out, in]
    return ScoreState(sums, samples=state.samples, tokens=state.tokens)
