"""LRP weight relevance (paper Eq. 8): R_W = W * dT/dW where the backward pass follows
LRP rules (AttnLRP or CP-LRP from lxt) instead of the plain chain rule.

Under lxt's Gradient x Input formulation, relevance is gradient times input once the
non-linear operations (norms, gates, softmax) are given LRP rules; for a linear layer
the relevance of weight w_ij summed over tokens is exactly w_ij times its gradient.
The accumulation is the gradient scorer's, inside `lrp_rules`.
"""

from __future__ import annotations

import torch

from core.layers import Prunable
from core.lrp_rules import lrp_rules
from core.scorers import gradient
from core.scorers.base import ScoreState


def accumulate(
    model, layers: list[Prunable], ids: torch.Tensor, mask: torch.Tensor, state: ScoreState, target: str, variant: str,
    aggregate: str = "abs-sample",
) -> None:
    with lrp_rules(model, variant):
        gradient.accumulate(model, layers, ids, mask, state, target, aggregate)
