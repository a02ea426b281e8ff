"""Weight x gradient: R_W = W * dT/dW, summed over samples, with plain autograd.

The gradient of a sum over samples is the sum of per-sample gradients, and W is the
same for every sample, so one backward per batch gives the exact per-sample sum. Each
weight's gradient is folded into its fp32 accumulator as soon as autograd finishes it
(`register_post_accumulate_grad_hook`) and then dropped, so at most one layer's
gradient exists at a time besides the accumulators.
"""

from __future__ import annotations

import torch

from core.layers import Prunable
from core.scorers.base import ScoreState, next_token_target


def accumulate(
    model, layers: list[Prunable], ids: torch.Tensor, mask: torch.Tensor, state: ScoreState, target: str
) -> None:
    handles = []

    def hook_for(p: Prunable):
        def hook(param: torch.Tensor) -> None:
            r = param.detach().float() * param.grad.float()  # [out, in] or Conv1D's [in, out]
            r = r.t() if p.transposed else r
            if p.name in state.sums:
                state.sums[p.name] += r
            else:
                state.sums[p.name] = r.contiguous()
            param.grad = None

        return hook

    weights = [p.module.weight for p in layers]
    try:
        for p, w in zip(layers, weights):
            w.requires_grad_(True)
            handles.append(w.register_post_accumulate_grad_hook(hook_for(p)))
        with torch.enable_grad():
            logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
            next_token_target(logits, ids, mask, target).backward()
    finally:
        for h in handles:
            h.remove()
        for w in weights:
            w.requires_grad_(False)
            w.grad = None
