"""Wanda (Sun et al. 2023): |W_ij| * ||X_j||_2, the input activation norm over all tokens."""

from __future__ import annotations

import torch

from core.attribution.state import ScorerOptions, ScoreState
from core.data.tokens import Batch
from core.model.layers import Prunable, weight_view


@torch.no_grad()
def accumulate(model, layers: list[Prunable], batch: Batch, state: ScoreState, options: ScorerOptions) -> None:
    keep = batch.mask.bool()  # [batch, seq]; pads do not count
    batch_sums: dict[str, torch.Tensor] = {}  # committed once the forward pass completes (it may be cancelled)

    def hook_for(p: Prunable):
        def hook(_module, inputs, _output):
            x = inputs[0].reshape(keep.shape[0], -1, inputs[0].shape[-1])[keep.to(inputs[0].device)].float()  # [tokens, in]
            batch_sums[p.name] = (x * x).sum(0)  # [in]

        return hook

    handles = [p.module.register_forward_hook(hook_for(p)) for p in layers]
    try:
        model(input_ids=batch.ids, attention_mask=batch.mask, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    for name, sq in batch_sums.items():
        state.add(name, sq)


def finish(model, layers: list[Prunable], state: ScoreState, options: ScorerOptions) -> dict[str, torch.Tensor]:
    return {p.name: weight_view(p).detach().abs().float().to(state.sums[p.name].device) * state.sums[p.name].sqrt().unsqueeze(0) for p in layers}
